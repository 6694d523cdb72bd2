"""Metrics against a hand-computed confusion matrix, inference modes, calibration, report outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from c2s_pipeline.eval.inference import apply_seen_bias, predict_logits, segment
from c2s_pipeline.eval.metrics import ConfusionMatrix, harmonic, per_class_rows, split_confusion, summarize
from c2s_pipeline.eval.report import (
    legend_entries,
    metrics_table,
    overlay_png,
    palette,
    per_class_bar_chart,
    read_per_class_csv,
    write_per_class_csv,
)
from c2s_pipeline.eval.speed import count_flops, measure_fps
from c2s_pipeline.student.model import class_logits

# 4 classes; class 3 appears nowhere; 255 pixels are ignored.
LABEL = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 255, 255])
PRED = torch.tensor([0, 0, 1, 1, 0, 2, 0, 0, 3, 1])


def test_confusion_matrix_and_iou_by_hand():
    cm = ConfusionMatrix(4)
    cm.update(PRED, LABEL)
    expected = torch.tensor(
        [
            [2, 1, 0, 0],  # label 0: pred 0, 0, 1
            [1, 1, 0, 0],  # label 1: pred 1, 0
            [2, 0, 1, 0],  # label 2: pred 2, 0, 0
            [0, 0, 0, 0],
        ]
    )
    assert torch.equal(cm.mat, expected)
    iou = cm.iou()
    # class 0: tp 2, fp 3, fn 1 -> 2/6; class 1: tp 1, fp 1, fn 1 -> 1/3; class 2: tp 1, fn 2 -> 1/3; class 3: NaN
    torch.testing.assert_close(iou[:3], torch.tensor([2 / 6, 1 / 3, 1 / 3], dtype=torch.float64))
    assert math.isnan(iou[3]) and cm.pixel_accuracy() == pytest.approx(4 / 8)
    s = summarize(iou, np.array([True, True, False, False]), cm.pixel_accuracy())
    assert s["sIoU"] == pytest.approx(100 * (2 / 6 + 1 / 3) / 2) and s["uIoU"] == pytest.approx(100 / 3)
    assert s["mIoU"] == pytest.approx(100 * (2 / 6 + 2 / 3) / 3)  # NaN class excluded
    assert s["hIoU"] == pytest.approx(2 * s["sIoU"] * s["uIoU"] / (s["sIoU"] + s["uIoU"]))
    rows = per_class_rows(iou, ["a", "b", "c", "d"], [True, True, False, False])
    assert rows[2] == {"class": "c", "iou": pytest.approx(33.3333, abs=1e-3), "seen": False} and rows[3]["iou"] is None
    # class 0 seen: 1 of its 3 pixels went to an unseen class; 3 of the 5 unseen pixels (1 + 2) went to class 0
    crossing = split_confusion(cm.mat, [True, False, False, False])
    assert crossing == {"seen_as_unseen": pytest.approx(100 / 3), "unseen_as_seen": pytest.approx(60.0)}
    assert split_confusion(cm.mat, [True, True, False, False]) == {
        "seen_as_unseen": 0.0,
        "unseen_as_seen": pytest.approx(100 * 2 / 3),
    }
    assert math.isnan(split_confusion(cm.mat, [True] * 4)["unseen_as_seen"])


def test_never_predicted_class_scores_zero_and_hiou_edge_cases():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 0, 1]), torch.tensor([0, 2, 1]))
    assert cm.iou()[2] == 0
    s = summarize(cm.iou(), np.array([True, True, False]), cm.pixel_accuracy())
    assert s["uIoU"] == 0 and s["hIoU"] == 0
    assert harmonic(0.0, 0.0) == 0 and harmonic(float("nan"), 50.0) == 0 and harmonic(50.0, 50.0) == 50.0


def test_label_out_of_range_is_named():
    with pytest.raises(ValueError, match="label value 7 is outside 0..3"):
        ConfusionMatrix(4).update(torch.tensor([0]), torch.tensor([7]))


def test_a_student_whose_features_are_the_true_text_embedding_scores_100():
    torch.manual_seed(0)
    text = F.normalize(torch.randn(6, 16), dim=-1)
    label = torch.arange(6).repeat_interleave(8).view(6, 8).repeat(2, 1)  # (12, 8), all 6 classes
    features = text[label].permute(2, 0, 1)[None]  # (1, D, 12, 8)
    seen = torch.tensor([True, True, True, True, False, False])
    logits_fn = lambda x: F.interpolate(class_logits(features, text, 50.0), size=x.shape[-2:])  # noqa: E731
    pred = segment(logits_fn, torch.zeros(1, 3, 12, 8), seen, 0.1, mode="whole", crop=12, stride=12)
    cm = ConfusionMatrix(6)
    cm.update(pred, label)
    s = summarize(cm.iou(), seen.numpy(), cm.pixel_accuracy())
    assert s["sIoU"] == 100 and s["uIoU"] == 100 and s["hIoU"] == 100


def test_whole_and_slide_agree_for_a_pointwise_model_and_flip_is_consistent():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, 1)
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        whole = predict_logits(conv, image, mode="whole", crop=64)
        wide = torch.randn(1, 3, 32, 64)  # short side = crop: three overlapping windows at scale 1
        slide = predict_logits(conv, wide, mode="slide", crop=32, stride=16)
        torch.testing.assert_close(whole, conv(image), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(slide, conv(wide), atol=1e-5, rtol=1e-5)
        flipped = predict_logits(conv, image, mode="whole", crop=64, flip=True)
        torch.testing.assert_close(flipped, whole, atol=1e-5, rtol=1e-5)  # a 1x1 conv commutes with flips
        odd = predict_logits(conv, torch.randn(1, 3, 97, 131), mode="slide", crop=32, stride=24)
    assert odd.shape == (1, 5, 97, 131)
    with pytest.raises(ValueError, match="whole or slide"):
        predict_logits(conv, image, mode="tile")


def test_slide_windows_are_calibrated_before_they_are_merged():
    """ZegCLIP: sigmoid (- bias) per window, then the average. Column 1 is in both windows of a 2 x 3 image;
    class 0 scores 10 in the left window and -2 in the right one, class 1 scores 1 in both."""

    def logits_fn(window):  # channel 0 holds the column index
        left = float(window[0, 0, 0, 0]) == 0
        scores = torch.tensor([10.0 if left else -2.0, 1.0])
        return scores.view(1, 2, 1, 1).expand(1, 2, *window.shape[-2:])

    image = torch.arange(3.0).view(1, 1, 1, 3).expand(1, 3, 2, 3)
    no_seen = torch.zeros(2, dtype=torch.bool)
    pred = segment(logits_fn, image, no_seen, 0.0, "sigmoid", mode="slide", crop=2, stride=1)
    assert pred[0].tolist() == [0, 1, 1]  # column 1: mean sigmoid 0.56 < 0.73 (merged logits would say 0)
    merged = apply_seen_bias(
        predict_logits(logits_fn, image, mode="slide", crop=2, stride=1), no_seen, 0.0, calibration="sigmoid"
    )
    assert merged[0].argmax(0)[0].tolist() == [0, 0, 1]  # what calibrating after merging gives
    with pytest.raises(ValueError, match="softmax or sigmoid"):
        segment(logits_fn, image, no_seen, 0.1, "platt", mode="whole", crop=2)


def test_sigmoid_calibration_subtracts_the_bias_from_each_seen_sigmoid():
    logits = torch.tensor([0.3, 0.2, -1.0]).view(1, 3, 1, 1)
    seen = torch.tensor([True, False, True])
    got = apply_seen_bias(logits, seen, 0.1, calibration="sigmoid")[0, :, 0, 0]
    torch.testing.assert_close(got, torch.sigmoid(logits[0, :, 0, 0]) - torch.tensor([0.1, 0.0, 0.1]))
    assert got.argmax().item() == 1  # sigmoid(0.3) - 0.1 < sigmoid(0.2)


def test_seen_bias_flips_only_small_margins():
    seen = torch.tensor([True, False])
    close = torch.log(torch.tensor([0.52, 0.48])).view(1, 2, 1, 1)  # seen ahead by 0.04 < 0.1
    far = torch.log(torch.tensor([0.7, 0.3])).view(1, 2, 1, 1)  # seen ahead by 0.4 > 0.1
    assert apply_seen_bias(close, seen, 0.0).argmax(1).item() == 0
    assert apply_seen_bias(close, seen, 0.1).argmax(1).item() == 1
    assert apply_seen_bias(far, seen, 0.1).argmax(1).item() == 0


def test_report_table_csv_chart_and_overlay(tmp_path):
    table = metrics_table(
        [
            {
                "name": "c2s",
                "sIoU": 80.123,
                "uIoU": 40.0,
                "hIoU": 53.36,
                "mIoU": 70.0,
                "pixel_acc": 90.0,
                "seen_as_unseen": 3.5,
                "unseen_as_seen": 42.0,
            },
            {"name": "old", "sIoU": 1.0},
        ]
    )  # a metrics file from before a column
    assert table.splitlines()[0] == (
        "| model | sIoU | uIoU | hIoU | mIoU | pixel_acc | seen_as_unseen | unseen_as_seen |"
    )
    assert "| c2s | 80.12 | 40.00 | 53.36 | 70.00 | 90.00 | 3.50 | 42.00 |" in table
    assert "| old | 1.00 | nan | nan | nan | nan | nan | nan |" in table
    rows = [{"class": "a", "iou": 12.5, "seen": True}, {"class": "b", "iou": None, "seen": False}]
    assert read_per_class_csv(write_per_class_csv(rows, tmp_path / "x.csv")) == rows
    png = per_class_bar_chart({"c2s": rows, "base": rows}, tmp_path / "bars.png")
    assert Image.open(png).size[0] > 100
    image = np.full((20, 30, 3), 100, np.uint8)
    pred = np.zeros((20, 30), np.int64)
    pred[:, 15:] = 2
    out = overlay_png(image, pred, ["sky", "tree", "road"], tmp_path / "o.png")
    shown = np.asarray(Image.open(out).convert("RGB"))
    assert shown.shape[0] >= 20 and shown.shape[1] > 30
    colours = palette(3)
    np.testing.assert_array_equal(shown[5, 20], np.round(0.5 * 100 + 0.5 * colours[2].astype(float)).astype(np.uint8))
    assert legend_entries(pred, ["sky", "tree", "road"]) == [(0, "sky"), (2, "road")]
    assert len({tuple(c) for c in palette(21)}) == 21


def test_flops_and_fps():
    assert count_flops(torch.nn.Linear(10, 20), torch.randn(1, 10)) == 2 * 10 * 20
    assert measure_fps(torch.nn.Conv2d(3, 3, 1), torch.randn(1, 3, 8, 8), warmup=1, iters=3, device="cpu") > 0


def test_label_pixels_leaves_background_rows_and_unsure_pixels_unlabelled():
    from c2s_pipeline.eval.open_vocab import UNLABELLED, label_pixels

    scores = torch.tensor([[[0.6, 0.2, 0.1]], [[0.3, 0.7, 0.2]], [[0.1, 0.1, 0.7]]])  # (3 rows, 1, 3 pixels)
    assert label_pixels(scores, 3).tolist() == [[0, 1, 2]]  # every pixel named
    assert label_pixels(scores, 2).tolist() == [[0, 1, UNLABELLED]]  # row 2 is a background prompt
    assert label_pixels(scores, 3, threshold=0.65).tolist() == [[UNLABELLED, 1, 2]]
    assert label_pixels(scores.numpy(), 2, 0.65).dtype == np.int16


def test_background_names_move_after_the_typed_ones_or_are_asked_for():
    from c2s_pipeline.config import PredictConfig
    from c2s_pipeline.eval.open_vocab import PredictError, split_background

    background = PredictConfig(unlabelled="background", background=("background", "sky"))
    assert split_background(["sky", "cat", "dog"], background) == ([1, 2, 0], 2)
    assert split_background(["sky", "cat"], PredictConfig(unlabelled="none")) == ([0, 1], 2)
    with pytest.raises(PredictError, match='c2s vocab "cat,dog,background,sky"'):
        split_background(["cat", "dog"], background)
