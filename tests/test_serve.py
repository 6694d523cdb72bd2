"""`c2s serve`: the page in a real headless Chromium draws the overlay `c2s predict` draws; bad input is a
message on the page; new class names are embedded once by the teacher's text tower."""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from benchmarks.page_screenshot import CHROMEDRIVER, CHROMIUM, chromium, serve
from c2s_pipeline.config import to_dict
from c2s_pipeline.eval.open_vocab import PredictError, write_vocab
from c2s_pipeline.stages import predict
from c2s_pipeline.stages.serve import SHARE_HEADERS, Segmenter, class_shares, parse_vocabulary

# Slow (trains a student, starts a server and Chromium); one xdist worker runs them all, so the server and the
# browser start once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("serve")]


def test_vocabulary_is_parsed_in_order_without_blanks_or_repeats():
    assert parse_vocabulary(" cat, dog,,cat , grass ") == ["cat", "dog", "grass"]
    for empty in ("", " , ,", None):
        with pytest.raises(PredictError, match="type at least one class name"):
            parse_vocabulary(empty)


def test_class_shares_are_percentages_of_present_classes_largest_first():
    pred = np.array([[0, 0, 2], [2, 2, 2]])
    assert class_shares(pred, ["a", "b", "c"]) == [["c", 66.67], ["a", 33.33]]
    assert class_shares(np.array([[-1, 0, 0, 2]]), ["a", "b", "c"]) == [
        ["a", 50.0],
        ["c", 25.0],
        ["(unlabelled)", 25.0],
    ]


def test_new_names_are_embedded_once_by_the_teachers_text_tower(trained_run, project_params, tmp_path):
    segmenter = Segmenter(project_params, trained_run, cache_dir=trained_run.parent / "cache")
    known = segmenter.class_names[:3]
    names, emb = segmenter.vocabulary(", ".join(known))
    assert names == known and segmenter.clip_loads == 0  # the training vocabulary needs no CLIP
    assert torch.equal(emb, torch.stack([segmenter.trained[n] for n in known]))

    vocab = f"{known[0]}, purple ring, orange moon"
    names, emb = segmenter.vocabulary(vocab)
    assert names == [known[0], "purple ring", "orange moon"] and emb.shape == (3, emb.shape[1])
    assert segmenter.clip_loads == 1
    ref = torch.load(write_vocab(segmenter.run.params, names[1:], tmp_path / "v.pt"), weights_only=True)
    assert torch.allclose(emb[1:], ref["text_embeddings"], atol=1e-5)

    calls = []
    clip, templates = segmenter._clip
    segmenter._clip = (type("Counting", (), {"encode_text": lambda self, *a, **k: calls.append(a)})(), templates)
    again, emb2 = segmenter.vocabulary("orange moon, purple ring")
    assert calls == [] and torch.equal(emb2, emb[[2, 1]])  # cached: the text tower is not run again


def test_a_teacher_that_cannot_load_is_a_message_naming_the_new_classes(trained_run, project_params, monkeypatch):
    def missing_weights(params):
        raise FileNotFoundError(params.teacher.pretrained)

    monkeypatch.setattr("c2s_pipeline.stages.serve.text_encoder", missing_weights)
    segmenter = Segmenter(project_params, trained_run, cache_dir=trained_run.parent / "cache")
    with pytest.raises(PredictError, match="cannot embed purple ring: the teacher's CLIP did not load"):
        segmenter.vocabulary("purple ring")


def test_a_vocabulary_is_bounded_in_names_and_name_length():
    from c2s_pipeline.stages import serve

    assert len(parse_vocabulary(", ".join(f"c{i}" for i in range(serve.MAX_NAMES)))) == serve.MAX_NAMES
    with pytest.raises(PredictError, match=f"20000 class names given; .* at most {serve.MAX_NAMES}"):
        parse_vocabulary(", ".join(f"c{i}" for i in range(20_000)))
    assert parse_vocabulary("x" * serve.MAX_NAME_CHARS) == ["x" * serve.MAX_NAME_CHARS]
    with pytest.raises(PredictError, match=f"has {serve.MAX_NAME_CHARS + 1} characters"):
        parse_vocabulary("cat, " + "x" * (serve.MAX_NAME_CHARS + 1))


def test_the_name_cache_is_bounded_and_keeps_the_training_vocabulary(trained_run, project_params, monkeypatch):
    from c2s_pipeline.stages import serve

    monkeypatch.setattr(serve, "NAME_CACHE", 3)
    monkeypatch.setattr(serve, "ENCODE_BATCH", 2)
    segmenter = Segmenter(project_params, trained_run, cache_dir=trained_run.parent / "cache")
    batches = []
    encode = lambda names: batches.append(list(names)) or torch.ones(len(names), 4)  # noqa: E731
    monkeypatch.setattr(segmenter, "_encode", encode)
    segmenter.trained = {n: torch.zeros(4) for n in segmenter.class_names}
    segmenter.vocabulary("a, b, c, d, e")
    assert batches == [["a", "b"], ["c", "d"], ["e"]]  # a long vocabulary in bounded batches
    assert list(segmenter.cached) == ["c", "d", "e"]  # the oldest dropped
    segmenter.vocabulary(f"c, {segmenter.class_names[0]}, f")  # c used again, f new: d is the oldest now
    assert list(segmenter.cached) == ["e", "c", "f"] and batches[-1] == ["f"]
    assert len(segmenter.trained) == len(segmenter.class_names)  # trained names never leave


def test_beyond_loopback_the_page_warns_or_asks_for_the_password(monkeypatch, caplog):
    from c2s_pipeline.stages import serve

    monkeypatch.delenv(serve.PASSWORD_ENV, raising=False)
    for host in ("127.0.0.1", "localhost", "::1"):
        assert serve.password_check(host) is None
    assert not caplog.records
    with caplog.at_level("WARNING"):
        assert serve.password_check("0.0.0.0") is None
    assert "without authentication" in caplog.text and serve.PASSWORD_ENV in caplog.text
    monkeypatch.setenv(serve.PASSWORD_ENV, "s3cret")
    for host in ("0.0.0.0", "127.0.0.1"):  # set, it holds on loopback too (tunnels, proxies)
        check = serve.password_check(host)
        assert check("anyone", "s3cret") and not check("anyone", "guess")


def test_a_huge_image_costs_bounded_memory_and_keeps_its_size(trained_run, project_params, monkeypatch):
    """Scores are taken at a size within MAX_SCORE_VALUES and the class map upsampled (nearest); below the bound
    the map is the exact argmax at the image's size."""
    from c2s_pipeline.eval import open_vocab
    from c2s_pipeline.student.checkpoint import load_student

    student, text, run = load_student(trained_run, cache_dir=trained_run.parent / "cache")
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3)).astype(np.uint8)
    exact = open_vocab.class_map(student, text, run.params, project_params.eval, image)
    sizes, predict_logits = [], open_vocab.predict_logits
    monkeypatch.setattr(
        open_vocab, "predict_logits", lambda *a, **k: sizes.append(k["out_size"]) or predict_logits(*a, **k)
    )
    monkeypatch.setattr(open_vocab, "MAX_SCORE_VALUES", 30 * 40 * len(text))
    bounded = open_vocab.class_map(student, text, run.params, project_params.eval, image)
    assert sizes == [(30, 40)] and bounded.shape == exact.shape == (90, 120)
    assert (bounded == np.repeat(np.repeat(bounded[::3, ::3], 3, 0), 3, 1)).all()  # nearest-upsampled blocks
    assert (bounded == exact).mean() > 0.8  # the same segmentation


# --- the page in a real browser ------------------------------------------------------------------------------


def _browser_or_skip():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    required = os.environ.get("C2S_REQUIRE_BROWSER")
    if missing and required:
        pytest.fail(f"{', '.join(missing)} missing: make browser (apt-get install chromium chromium-driver)")
    if missing:
        pytest.skip("needs Debian's chromium and chromium-driver (make browser)")
    try:
        import gradio  # noqa: F401
        import selenium  # noqa: F401
    except ImportError as err:
        (pytest.fail if required else pytest.skip)(f"{err.name} missing: pip install -e '.[test]'")
    return chromium()


@pytest.fixture(scope="module")
def served(trained_run, project_params, tmp_path_factory):
    """(url, project folder, server process) of `c2s serve` started as a user would, on loopback."""
    pytest.importorskip("gradio")
    project = tmp_path_factory.mktemp("serve")
    (project / "params.yaml").write_text(yaml.safe_dump(to_dict(project_params)))
    try:
        server, url = serve(["--run", str(trained_run), "--cache-dir", str(trained_run.parent / "cache")], project)
    except RuntimeError as err:
        pytest.fail(str(err))
    try:
        yield url, project, server
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def page(served):
    """(Chromium driver, url, project folder) on the served page."""
    driver = _browser_or_skip()
    url, project, _ = served
    try:
        yield driver, url, project
    finally:
        driver.quit()


def _src(driver, element_id: str) -> str | None:
    from selenium.webdriver.common.by import By

    imgs = driver.find_elements(By.CSS_SELECTOR, f"#{element_id} img")
    return imgs[0].get_attribute("src") if imgs else None


def _fetch(src: str) -> np.ndarray:
    return np.asarray(Image.open(urllib.request.urlopen(src)).convert("RGB"))


def _submit(
    driver, url, image: Path | None, vocabulary: str, unlabelled: str | None = None, before: Path | None = None
):
    """Open the page fresh, upload image (if any), type the vocabulary, pick the unlabelled option (its label on
    the page), press Segment; returns the status text and the overlay's URL (None when the page shows a
    message). `before`: a screenshot once the upload is shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, 60)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#c2s-image input[type=file]"))
    if image is not None:
        driver.find_element(By.CSS_SELECTOR, "#c2s-image input[type=file]").send_keys(str(image))
        wait.until(lambda d: image.stem in d.find_element(By.ID, "c2s-image").text)  # shown as "stem\n.png"
    if before is not None:
        wait.until(lambda d: _src(d, "c2s-input"))
        driver.save_screenshot(str(before))
    box = driver.find_element(By.CSS_SELECTOR, "#c2s-vocab textarea")
    box.clear()
    box.send_keys(vocabulary)
    if unlabelled is not None:
        driver.find_element(By.XPATH, f"//*[@id='c2s-unlabelled']//label[contains(., '{unlabelled}')]").click()
    driver.find_element(By.ID, "c2s-segment").click()

    def done(d):
        # the page's messages are bold markdown; anything else in the status block is gradio's own
        messages = d.find_elements(By.CSS_SELECTOR, "#c2s-status strong")
        status = messages[0].text.strip() if messages else ""
        src = _src(d, "c2s-overlay")
        return (status, src) if status or src else None

    return wait.until(done)


def test_page_draws_the_overlay_of_c2s_predict(page, trained_run, project_params, tmp_path):
    from selenium.webdriver.common.by import By

    from c2s_pipeline.data.registry import dataset_from_params
    from c2s_pipeline.eval.open_vocab import class_map
    from c2s_pipeline.stages.serve import display_scale
    from c2s_pipeline.student.checkpoint import load_student, load_vocab

    driver, url, project = page
    rng = np.random.default_rng(5)
    image = tmp_path / "scene.png"
    pixels = rng.integers(0, 256, (128, 128, 3)).astype(np.uint8)  # a world image's size
    Image.fromarray(pixels).save(image)
    student, _, run = load_student(trained_run, cache_dir=trained_run.parent / "cache")
    names = [*list(run.provenance["class_names"])[:2], "purple ring"]  # two trained names and a new one

    status, src = _submit(driver, url, image, ", ".join(names), before=tmp_path / "serve-before.png")
    assert status == "" and src, status
    driver.save_screenshot(str(tmp_path / "serve-after.png"))
    k = display_scale(128, 128)
    assert k == 4
    # the input as a picture, enlarged k times (nearest neighbour)
    assert (_fetch(_src(driver, "c2s-input")) == pixels.repeat(k, 0).repeat(k, 1)).all()
    shown = _fetch(src)

    vocab = write_vocab(run.params, names, tmp_path / "vocab.pt")
    out = predict.run(
        run.params,
        [str(image)],
        trained_run,
        tmp_path / "predicted",
        vocab=vocab,
        cache_dir=trained_run.parent / "cache",
    )
    expected = np.asarray(Image.open(out / "scene_overlay.png").convert("RGB"))
    # the overlay, larger than the input: c2s predict's overlay, each pixel k x k (the legend beside it)
    assert shown.shape[0] >= 128 * k and shown.shape[1] > 128 * k
    assert (shown[: 128 * k : k, : 128 * k : k] == expected[:128, :128]).all()
    # the share table: each present class and its percentage of predict's class map, largest first
    pred = class_map(
        student,
        load_vocab(vocab)[1],
        run.params,
        project_params.eval,
        np.asarray(Image.open(image)),
        threshold=run.params.predict.threshold,
    )
    cells = driver.find_element(By.ID, "c2s-shares").text.split("\n")
    cells = cells[cells.index(SHARE_HEADERS[1]) + 1 :]  # after the headers
    assert [[n, float(v)] for n, v in zip(cells[::2], cells[1::2])] == class_shares(pred, names)
    # the world's val images are offered as examples
    first_val = dataset_from_params(project_params, project_params.data.val_split).image_path(0).name
    assert first_val in driver.find_element(By.TAG_NAME, "body").text
    for shot in ("serve-before.png", "serve-after.png"):
        assert (tmp_path / shot).stat().st_size > 10_000


def test_the_background_option_leaves_the_pixels_c2s_predict_leaves(page, trained_run, project_params, tmp_path):
    """With "leave background unlabelled" the page draws no colour where `c2s predict --unlabelled background`
    leaves pixels unlabelled, pixel for pixel."""
    from c2s_pipeline.config import override
    from c2s_pipeline.eval.open_vocab import UNLABELLED, class_map, split_background
    from c2s_pipeline.student.checkpoint import load_student, load_vocab

    driver, url, _ = page
    image = tmp_path / "scene.png"
    pixels = np.random.default_rng(7).integers(0, 256, (64, 80, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(image)
    student, _, run = load_student(trained_run, cache_dir=trained_run.parent / "cache")
    names = list(run.provenance["class_names"])[:3]
    status, src = _submit(driver, url, image, ", ".join(names), unlabelled="leave background unlabelled")
    assert status == "" and src, status
    k = 512 // 80
    shown = _fetch(src)[: 64 * k : k, : 80 * k : k]

    params = override(run.params, predict={"unlabelled": "background"})
    vocab = write_vocab(run.params, [*names, "background"], tmp_path / "vocab.pt")
    out = predict.run(
        params, [str(image)], trained_run, tmp_path / "predicted", vocab=vocab, cache_dir=trained_run.parent / "cache"
    )
    expected = np.asarray(Image.open(out / "scene_overlay.png").convert("RGB"))[:64, :80]
    assert (shown == expected).all()
    vocab_names, emb = load_vocab(vocab)
    order, n_named = split_background(vocab_names, params.predict)
    pred = class_map(student, emb[order], run.params, project_params.eval, pixels, n_named=n_named)
    left = pred == UNLABELLED
    assert 0 < left.mean() < 1, "the test needs pixels of both kinds"
    assert (shown[left] == pixels[left]).all()  # transparent: the image itself
    assert (shown[~left] != pixels[~left]).any(-1).mean() > 0.9  # named pixels carry their colour


@pytest.mark.parametrize("case", ["no image", "empty vocabulary", "not an image"])
def test_bad_input_is_a_message_on_the_page(page, tmp_path, case):
    from selenium.webdriver.common.by import By

    driver, url, _ = page
    good = tmp_path / "ok.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(good)
    broken = tmp_path / "broken.png"
    broken.write_text("this is a text file, not a picture")
    image, vocabulary, message = {
        "no image": (None, "cat, dog", "upload an image first"),
        "empty vocabulary": (good, " , ", "type at least one class name"),
        "not an image": (broken, "cat", "image broken.png is corrupt or truncated, or not a JPEG/PNG"),
    }[case]
    status, src = _submit(driver, url, image, vocabulary)
    assert message in status and src is None, status
    assert not driver.find_elements(By.CSS_SELECTOR, ".toast-body")  # no gradio error popup


# --- the page under load, on loopback ----------------------------------------------------------------------------

PEAK_RSS_BOUND = 2.5 * 2**30  # bytes: the server's high-water mark through every test of this module (1.7 GiB measured)


def flat_png(path: Path, width: int, height: int) -> Path:
    """A one-colour greyscale PNG of any size in little memory and a few hundred KB (rows streamed to zlib)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z, row, body = zlib.compressobj(9), b"\x00" + b"\x80" * width, []
    for _ in range(height):
        body.append(z.compress(row))
    body.append(z.flush())
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", b"".join(body))
        + chunk(b"IEND", b"")
    )
    return path


def peak_rss(pid: int) -> int:
    """The process's resident-memory high-water mark (VmHWM), in bytes."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def test_concurrent_hostile_requests_each_get_an_answer_in_bounded_memory(served, tmp_path):
    """Eight requests at once: a 12000 x 12000 PNG (~100 KB), a 20,000-name vocabulary, a 5000 x 5000 image under
    the pixel cap, a file that is no image, and ordinary ones. Each gets its overlay or its message, the
    server's peak RSS stays under PEAK_RSS_BOUND, and the page still answers afterwards."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client, handle_file

    url, _, server = served
    ok = tmp_path / "ok.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (80, 100, 3)).astype(np.uint8)).save(ok)
    broken = tmp_path / "broken.png"
    broken.write_text("not a picture")
    many = ", ".join(f"thing {i}" for i in range(20_000))
    requests = [
        (flat_png(tmp_path / "huge.png", 12_000, 12_000), "red circle", "over c2s's limit of 64 MP"),
        (ok, many, "20000 class names given"),
        (flat_png(tmp_path / "big.png", 5_000, 5_000), "red circle, grey square", None),
        (broken, "red circle", "corrupt or truncated, or not a JPEG/PNG"),
        *[(ok, "red circle, grey square", None)] * 4,
    ]
    assert (tmp_path / "huge.png").stat().st_size < 1_000_000

    def ask(request):
        path, vocabulary, _ = request
        client = Client(url, verbose=False, download_files=False)
        return client.predict(handle_file(str(path)), vocabulary, "none", 0.5, api_name="/on_segment")

    start = time.time()
    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(ask, requests))
    assert time.time() - start < 240
    for (path, _, message), (_, overlay, shares, status, *_) in zip(requests, answers):
        if message is None:
            assert overlay and status == "" and shares["data"], (path.name, status)
        else:
            assert overlay is None and message in status, (path.name, status)
    assert server.poll() is None
    assert urllib.request.urlopen(url, timeout=10).status == 200
    assert peak_rss(server.pid) < PEAK_RSS_BOUND, f"peak RSS {peak_rss(server.pid) / 2**30:.2f} GiB"
