"""Dataset readers on tiny fixtures in each real layout: counts, mapping, the seen-only gate, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from c2s_pipeline.config import DataConfig
from c2s_pipeline.data.base import IGNORE_INDEX, DatasetError, as_in_main_process
from c2s_pipeline.data.registry import DATASETS, build_dataset, dataset_spec, describe_datasets
from c2s_pipeline.data.transforms import resize_pair, view_crop_flip, view_windows
from tests.layouts import make_cocostuff, make_context, make_voc, make_world_meta

VOC_RAWS = {"train_aug": [[0, 1, 16, 255], [20, 3, 17, 0], [5, 5, 19, 2]], "val": [[1, 2, 3, 4], [16, 17, 18, 19]]}


@pytest.fixture
def voc_root(tmp_path):
    make_voc(tmp_path, VOC_RAWS)
    return tmp_path


def test_voc_counts_and_mapping(voc_root):
    ds = build_dataset("voc", voc_root, "train_aug")
    assert len(ds) == 3 and ds.spec.num_classes == 20 and ds.ids[0] == "train_aug_0000"
    sample = ds[0]
    assert sample.image.shape == (48, 64, 3) and sample.image.dtype == np.uint8
    # raw quadrants 0, 1, 16, 255 -> ignore, 0, 15, ignore
    assert sample.label[0, 0] == IGNORE_INDEX and sample.label[0, -1] == 0
    assert sample.label[-1, 0] == 15 and sample.label[-1, -1] == IGNORE_INDEX
    assert set(np.unique(ds[1].label)) == {IGNORE_INDEX, 19, 2, 16}
    assert len(build_dataset("voc", voc_root / "VOCdevkit" / "VOC2012", "val")) == 2


def test_seen_only_gate_leaves_no_unseen_id(voc_root):
    full = build_dataset("voc", voc_root, "val")
    gated = build_dataset("voc", voc_root, "val", seen_only=True)
    unseen = set(full.spec.unseen)
    for i in range(len(full)):
        a, b = full[i].label, gated[i].label
        assert not unseen & set(np.unique(b).tolist())
        seen_pixels = ~np.isin(a, list(unseen))
        np.testing.assert_array_equal(a[seen_pixels], b[seen_pixels])  # seen ids untouched
        assert (b[~seen_pixels] == IGNORE_INDEX).all()


def test_context_and_cocostuff_mapping(tmp_path):
    make_context(tmp_path / "ctx", [[0, 1, 59, 8]])
    ds = build_dataset("context", tmp_path / "ctx", "train")
    lab = ds[0].label
    assert ds.spec.num_classes == 59 and lab[0, 0] == IGNORE_INDEX and lab[0, -1] == 0 and lab[-1, 0] == 58
    assert dataset_spec("context", context_unseen_split="B").unseen == (0, 2, 3, 7, 9, 13, 17, 19, 31, 37)
    with pytest.raises(DatasetError, match="unseen split 'C'"):
        dataset_spec("context", context_unseen_split="C")
    make_cocostuff(tmp_path / "coco", [[0, 170, 255, 19]])
    coco = build_dataset("cocostuff", tmp_path / "coco", "val", seen_only=True)
    lab = coco[0].label
    assert coco.spec.num_classes == 171 and lab[0, 0] == 0 and lab[0, -1] == 170
    assert lab[-1, -1] == IGNORE_INDEX  # 19 = cow is unseen


def test_unseen_names_match_published_splits():
    names = {r["dataset"]: r.get("unseen_names") for r in describe_datasets()}
    assert names["voc"] == ["pottedplant", "sheep", "sofa", "train", "tvmonitor"]
    assert names["cocostuff"] == [
        "cow",
        "giraffe",
        "suitcase",
        "frisbee",
        "skateboard",
        "carrot",
        "scissors",
        "cardboard",
        "clouds",
        "grass",
        "playingfield",
        "river",
        "road",
        "tree",
        "wall-concrete",
    ]
    assert names["context"] == [
        "aeroplane",
        "bird",
        "boat",
        "cat",
        "cow",
        "fence",
        "keyboard",
        "motorbike",
        "sofa",
        "tvmonitor",
    ]


def test_world_reads_voc_layout_with_its_own_spec(tmp_path):
    base = make_voc(tmp_path, {"train": [[1, 2, 3, 0]]})
    make_world_meta(base, [f"class{i}" for i in range(4)])
    ds = build_dataset("world", base, "train", seen_only=True, world_unseen=("class2",))
    assert ds.spec.class_names[0] == "class0" and ds.spec.unseen == (2,)
    assert set(np.unique(ds[0].label)) == {0, 1, IGNORE_INDEX}


def test_world_split_is_a_parameter_validated_by_name(tmp_path):
    base = make_voc(tmp_path, {"train": [[1, 2, 3, 0]]})
    make_world_meta(base, [f"class{i}" for i in range(4)])
    other = build_dataset("world", base, "train", seen_only=True, world_unseen=("class0", "class3"))
    assert other.spec.unseen == (0, 3)
    assert set(np.unique(other[0].label)) == {1, 2, IGNORE_INDEX}  # same image, other gate
    with pytest.raises(DatasetError, match="unknown: class9"):
        build_dataset("world", base, "train", world_unseen=("class9",))
    with pytest.raises(DatasetError, match="no seen class"):
        build_dataset("world", base, "train", world_unseen=tuple(f"class{i}" for i in range(4)))
    with pytest.raises(DatasetError, match="each once"):
        build_dataset("world", base, "train", world_unseen=("class1", "class1"))
    target = build_dataset("world", base, "train", world_unseen=())  # a cross-dataset target: no split
    assert target.spec.unseen == () and set(np.unique(target[0].label)) == {0, 1, 2, IGNORE_INDEX}


def test_view_windows_are_the_whole_image_then_corner_crops():
    assert view_windows(40, ()) == [(0, 0, 40)]
    assert view_windows(40, (0.75,)) == [(0, 0, 40), (0, 0, 30), (0, 10, 30), (10, 0, 30), (10, 10, 30)]
    with pytest.raises(ValueError, match="fractions"):
        view_windows(40, (1.0,))


def test_view_crop_shows_exactly_the_window(voc_root):
    sample = build_dataset("voc", voc_root, "val")[1]
    image, label = resize_pair(sample.image, sample.label, 40)
    img, lab = view_crop_flip(image, label, window=(10, 0, 20), size=20, flip=False, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(img, image[10:30, 0:20])
    np.testing.assert_array_equal(lab, label[10:30, 0:20])
    with pytest.raises(ValueError, match="does not fit"):
        view_crop_flip(image, label, window=(30, 0, 20), size=20, flip=False, rng=np.random.default_rng(0))


def test_resize_and_view_crop_keep_image_and_label_aligned(voc_root):
    sample = build_dataset("voc", voc_root, "val")[1]
    image, label = resize_pair(sample.image, sample.label, 40)
    assert image.shape == (40, 40, 3) and label.shape == (40, 40)
    rng = np.random.default_rng(3)
    for window in view_windows(40, (0.5, 0.75)):
        img, lab, lab2 = view_crop_flip(image, label, label, window=window, size=32, flip=True, rng=rng)
        assert img.shape == (32, 32, 3) and lab.shape == (32, 32)
        np.testing.assert_array_equal(lab, lab2)
        # red channel encodes 12 * raw label = 12 * (mapped + 1); check 2 px away from region borders
        inner = _interior(lab, 2)
        if inner.any():
            assert np.abs(img[..., 0][inner].astype(int) - 12 * (lab[inner].astype(int) + 1)).max() <= 5


def _interior(lab: np.ndarray, r: int) -> np.ndarray:
    """Labelled pixels whose (2r+1)^2 neighbourhood has the same label."""
    pad = np.pad(lab, r, constant_values=IGNORE_INDEX)
    h, w = lab.shape
    same = lab != IGNORE_INDEX
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            same &= pad[dy : dy + h, dx : dx + w] == lab
    return same


@pytest.mark.parametrize(
    "breakage, pattern",
    [
        ("missing_root", "dataset root folder .* not found"),
        ("missing_split", "split file .*val.txt not found"),
        ("missing_label", "label .*val_0000.png not found"),
        ("out_of_range", "has value 37 outside 0..20 or 255"),
        ("corrupt_jpeg", "image .*val_0000.jpg is corrupt"),
    ],
)
def test_bad_input_gives_one_line_error(voc_root, breakage, pattern):
    base = voc_root / "VOCdevkit" / "VOC2012"
    root = voc_root
    if breakage == "missing_root":
        root = voc_root / "nowhere"
    elif breakage == "missing_split":
        (base / "ImageSets" / "Segmentation" / "val.txt").unlink()
    elif breakage == "missing_label":
        (base / "SegmentationClassAug" / "val_0000.png").unlink()
    elif breakage == "out_of_range":
        Image.fromarray(np.full((48, 64), 37, np.uint8), mode="L").save(base / "SegmentationClassAug" / "val_0000.png")
    elif breakage == "corrupt_jpeg":
        path = base / "JPEGImages" / "val_0000.jpg"
        path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetError, match=pattern) as err:
        build_dataset("voc", root, "val")[0]
    assert "\n" not in str(err.value)


def test_unknown_dataset_lists_choices():
    with pytest.raises(DatasetError, match="choose one of voc, context, cocostuff, world"):
        build_dataset("ade", ".", "val")


def test_params_name_every_dataset_the_registry_reads():
    choices = next(f for f in dataclasses.fields(DataConfig) if f.name == "dataset").metadata["choices"]
    assert sorted(choices) == sorted(DATASETS)


class _MissingFile(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        raise FileNotFoundError(2, "No such file or directory", f"img_{i}.jpg")


def test_a_worker_os_error_keeps_its_errno_and_file_name():
    loader = torch.utils.data.DataLoader(_MissingFile(), num_workers=1, multiprocessing_context="fork")
    with pytest.raises(FileNotFoundError) as caught:
        next(as_in_main_process(loader))
    assert (caught.value.errno, caught.value.strerror, caught.value.filename) == (
        2,
        "No such file or directory",
        "img_0.jpg",
    )


# --- the two SBD-augmented VOC layouts, official palette masks, split-file encodings ------------------------


def _palette_png(path, raw):
    """An official VOC mask: mode P, the VOC colour palette; pixel values are the class indices."""
    im = Image.fromarray(raw.astype(np.uint8), mode="P")
    palette = np.zeros((256, 3), np.uint8)
    palette[:21] = np.random.default_rng(0).integers(0, 255, (21, 3))
    palette[255] = (224, 224, 192)
    im.putpalette(palette.flatten().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def _official_masks(base, ids, value):
    for id_ in ids:
        raw = np.full((48, 64), value, np.uint8)
        raw[:2] = 255  # the official masks' void border
        _palette_png(base / "SegmentationClass" / f"{id_}.png", raw)


def test_deeplab_zip_layout_scores_val_on_the_official_masks(voc_root):
    base = voc_root / "VOCdevkit" / "VOC2012"  # SegmentationClassAug holds every id
    _official_masks(base, ["val_0000", "val_0001"], value=7)  # the official val masks differ from the Aug ones
    val = build_dataset("voc", voc_root, "val")
    assert val.label_path(0).parent.name == "SegmentationClass"
    assert set(np.unique(val[0].label)) == {6, IGNORE_INDEX}  # raw 7 -> class 6: palette indices, not colours
    train = build_dataset("voc", voc_root, "train_aug")
    assert train.label_path(0).parent.name == "SegmentationClassAug"
    assert train[0].label[-1, 0] == 15


def test_mmseg_voc_aug_layout_reads_trainaug_and_both_label_folders(tmp_path):
    make_voc(tmp_path, {"trainaug": [[1, 2, 3, 4], [5, 6, 7, 8]], "aug": [[5, 6, 7, 8]]})  # SBD masks only
    base = tmp_path / "VOCdevkit" / "VOC2012"
    split_file = base / "ImageSets" / "Segmentation" / "trainaug.txt"
    split_file.write_text(split_file.read_text() + "2007_000032\n")  # a VOC train id: official mask only
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(base / "JPEGImages" / "2007_000032.jpg")
    _official_masks(base, ["2007_000032"], value=12)
    ds = build_dataset("voc", tmp_path, "train_aug")  # the DeepLab name finds mmseg's trainaug.txt
    assert ds.ids == ["trainaug_0000", "trainaug_0001", "2007_000032"]
    assert ds.label_path(0).parent.name == "SegmentationClassAug"
    assert ds.label_path(2).parent.name == "SegmentationClass"
    assert set(np.unique(ds[2].label)) == {11, IGNORE_INDEX}


@pytest.mark.parametrize("encode", [lambda t: "\ufeff" + t, lambda t: t.replace("\n", "\r\n")], ids=["bom", "crlf"])
def test_split_files_with_a_bom_or_crlf_read_cleanly(voc_root, encode):
    path = voc_root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt"
    path.write_bytes(encode(path.read_text()).encode("utf-8"))
    ds = build_dataset("voc", voc_root, "val")
    assert ds.ids == ["val_0000", "val_0001"]
    assert ds[0].label.shape == (48, 64)


def test_cocostuff_missing_image_names_the_file_under_another_extension(tmp_path):
    make_cocostuff(tmp_path / "coco_stuff164k", [[0, 1, 2, 3]])
    image = tmp_path / "coco_stuff164k" / "images" / "val2017" / "000000000000.jpg"
    image.rename(image.with_suffix(".JPG"))
    with pytest.raises(DatasetError) as err:
        build_dataset("cocostuff", tmp_path, "val")[0]
    message = str(err.value)
    assert "000000000000.JPG is there" in message and "split file" not in message and "\n" not in message


def test_auto_templates_are_each_datasets_own_prompt_set(tmp_path):
    from c2s_pipeline.config import Params

    assert Params().teacher.templates == "auto"
    assert dataset_spec("voc").prompt_set("auto") == "single"
    assert dataset_spec("cocostuff").prompt_set("auto") == "ensemble"
    assert dataset_spec("context").prompt_set("auto") == "ensemble"
    assert dataset_spec("cocostuff").prompt_set("single") == "single"  # an explicit choice wins


def test_ade20k_reads_mmsegs_layout_with_reduce_zero_label(tmp_path):
    from c2s_pipeline.data.ade20k import ADE20K_CLASSES
    from tests.layouts import make_ade20k

    make_ade20k(tmp_path, [[0, 1, 150, 13], [255, 3, 3, 3]])
    for root in (tmp_path, tmp_path / "ADEChallengeData2016"):  # the folder above, or the dataset's own
        dataset = build_dataset("ade20k", root, "val", unseen=("person",))
        assert len(dataset) == 2 and dataset.spec.num_classes == 150 and dataset.spec.unseen == (12,)
        label = dataset[0].label
        assert sorted(np.unique(label).tolist()) == [0, 12, 149, 255]  # 0 -> ignore, k -> k - 1
        assert ADE20K_CLASSES[12] == "person" and ADE20K_CLASSES[149] == "flag"
    seen_only = build_dataset("ade20k", tmp_path, "val", seen_only=True, unseen=("person",))[0].label
    assert 12 not in seen_only and sorted(np.unique(seen_only).tolist()) == [0, 149, 255]
    with pytest.raises(DatasetError, match="unknown ADE20K split 'test'"):
        build_dataset("ade20k", tmp_path, "test")
    with pytest.raises(DatasetError, match="not ADE20K-150 classes"):
        build_dataset("ade20k", tmp_path, "val", unseen=("unicorn",))
