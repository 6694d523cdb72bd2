"""The picture of `c2s serve` in the docs: the page before and after segmenting a world val image.

    python -m benchmarks.page_screenshot --run models/c2s --out docs/images   # after make demo; needs Chromium

Starts `c2s serve` on loopback, uploads the first val image, types eight class names (none of them the image's
own objects' when the world allows it, as a user naming only what they look for), keeps the params' option for
pixels no name fits, and saves `serve-before.png` and `serve-after.png` under --out.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from c2s_pipeline.config import load_params
from c2s_pipeline.data.reader import read_label
from c2s_pipeline.data.registry import dataset_from_params

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# The flags a closed network needs (no background connections), as root (no sandbox).
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


def chromium():
    """A Selenium driver of Debian's headless Chromium (make browser)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(args: list[str], cwd: Path, timeout: float = 180) -> tuple[subprocess.Popen, str]:
    """`c2s serve ARGS` on a free loopback port, once its page answers: (process, url)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen(
        [sys.executable, "-m", "c2s_pipeline.stages.cli", "serve", *args, "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url, deadline = f"http://127.0.0.1:{port}/", time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            return server, url
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                raise RuntimeError(f"c2s serve did not come up:\n{server.stdout.read()}") from None
            time.sleep(1)


def unnamed_vocabulary(params, n: int = 8) -> tuple[Path, list[str]]:
    """The first val image and n class names that avoid its own classes (as many as the vocabulary allows)."""
    dataset = dataset_from_params(params, params.data.val_split)
    names = list(dataset.spec.class_names)
    present = {int(v) - 1 for v in np.unique(read_label(dataset.label_path(0))) if 0 < v < 255}
    others = [c for i, c in enumerate(names) if i not in present]
    return dataset.image_path(0), (others + [c for c in names if c not in others])[:n]


def main() -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="models/c2s")
    ap.add_argument("--cache-dir", default="data_cache", help="folder of teacher stores")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="docs/images")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image, names = unnamed_vocabulary(load_params(args.params))
    server, url = serve(
        [
            "--run",
            str(Path(args.run).resolve()),
            "--cache-dir",
            str(Path(args.cache_dir).resolve()),
            "--params",
            str(Path(args.params).resolve()),
        ],
        cwd=Path.cwd(),
    )
    driver = chromium()
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#c2s-image input[type=file]"))
        driver.find_element(By.CSS_SELECTOR, "#c2s-image input[type=file]").send_keys(str(image.resolve()))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#c2s-input img"))
        box = driver.find_element(By.CSS_SELECTOR, "#c2s-vocab textarea")
        box.clear()
        box.send_keys(", ".join(names))
        driver.save_screenshot(str(out / "serve-before.png"))
        driver.find_element(By.ID, "c2s-segment").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#c2s-overlay img"))
        time.sleep(1)  # the share table renders after the overlay
        driver.save_screenshot(str(out / "serve-after.png"))
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=30)
    print(f"{image.name} with {', '.join(names)}: {out / 'serve-before.png'}, {out / 'serve-after.png'}")


if __name__ == "__main__":
    main()
