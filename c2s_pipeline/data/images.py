"""The one way c2s opens an image file: dataset images and labels, `c2s predict` inputs and page uploads.

Only the formats datasets ship are decoded (PIL's other plugins stay closed: its EPS plugin runs Ghostscript on a
PostScript file, whatever its name), and the pixel count is checked from the header, before any decoding, so a
small file that decodes to gigabytes is refused with one line (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from c2s_pipeline.config import ConfigError

IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "TIFF")
MAX_PIXELS_ENV = "C2S_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 64_000_000  # a 64-megapixel photo; COCO's largest image is 0.3 MP, ADE20K's about 5 MP


class ImageError(ValueError):
    """An image file c2s will not decode; one line naming the file, what is wrong (`problem`) and what to do."""

    def __init__(self, shown, problem: str, fix: str = ""):
        self.problem = problem
        super().__init__(f"image {shown} {problem}" + (f"; {fix}" if fix else ""))


def max_pixels() -> int:
    """The pixel cap: $C2S_MAX_IMAGE_PIXELS, else DEFAULT_MAX_PIXELS."""
    raw = os.environ.get(MAX_PIXELS_ENV, "")
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(
            f"{MAX_PIXELS_ENV}={raw!r} is not a positive whole number of pixels; e.g. {MAX_PIXELS_ENV}=200000000"
        )
    return value


@contextlib.contextmanager
def open_image(path: str | Path, name: str | None = None):
    """PIL image of `path`, not yet decoded, closed on exit; ImageError for a missing file, another format, or
    more pixels than max_pixels(). Messages call the file `name` (default: its path)."""
    cap, shown = max_pixels(), name or path
    names = "/".join(IMAGE_FORMATS)
    # PIL refuses over twice its own limit, whatever ours: it follows ours up, so raising ours works
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, cap)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the cap below decides
            im = Image.open(path, formats=IMAGE_FORMATS)
    except FileNotFoundError:
        raise ImageError(shown, "not found") from None
    except Image.DecompressionBombError:
        raise ImageError(
            shown, f"has over {2 * Image.MAX_IMAGE_PIXELS:,} pixels, more than PIL decodes", "resize it"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            shown, f"is corrupt or truncated, or not a {names} file", "re-download it, or convert it to JPEG or PNG"
        ) from None
    except (OSError, SyntaxError, ValueError) as err:  # a known format whose header is damaged
        raise _corrupt(shown, err) from None
    with im:
        width, height = im.size
        if width * height > cap:
            raise ImageError(
                shown,
                f"is {width} x {height} ({width * height / 1e6:.0f} MP), over c2s's limit of {cap / 1e6:.0f} MP",
                f"resize it, or raise the limit with {MAX_PIXELS_ENV}=<pixels>",
            )
        yield im


def decode(path: str | Path, mode: str | None = "RGB", name: str | None = None):
    """The decoded image (converted to `mode` unless None) as a PIL image; ImageError as open_image, and for a
    file that is truncated or corrupt past its header."""
    shown = name or path
    with open_image(path, name) as im:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
                return im.convert(mode) if mode else im.copy()
        except (OSError, SyntaxError, ValueError) as err:  # PIL signals truncation and corruption with these
            raise _corrupt(shown, err) from None


def _corrupt(shown, err: Exception) -> ImageError:
    return ImageError(shown, f"is corrupt or truncated ({err.__class__.__name__})", "re-download or re-export it")
