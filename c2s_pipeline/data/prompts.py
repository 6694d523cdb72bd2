"""Prompt templates: the sentences a class name is put into before CLIP's text tower embeds it.

Here, beside the datasets that name their prompt set, rather than in the teacher: writing data (the world's
captions) needs them and never loads open_clip.
"""

from __future__ import annotations

from c2s_pipeline.data.base import DatasetError

SINGLE_TEMPLATE = ("a photo of a {}.",)
ENSEMBLE_TEMPLATES = (  # ZegCLIP's 15 templates for COCO-Stuff / Context
    "a photo of a {}.",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "a {} in the scene.",
    "a photo of a {} in the scene.",
    "There is a {} in the scene.",
    "There is the {} in the scene.",
    "This is a {} in the scene.",
    "This is the {} in the scene.",
    "This is one {} in the scene.",
)
TEMPLATES = {"single": SINGLE_TEMPLATE, "ensemble": ENSEMBLE_TEMPLATES}


def template_list(templates: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The templates of a prompt set named in TEMPLATES, or `templates` itself when it lists templates with one
    {} each (a folder's own, from its classes.yaml); anything else is a one-line DatasetError."""
    if isinstance(templates, str):
        if templates not in TEMPLATES:
            raise DatasetError(
                f"unknown templates {templates!r}; choose one of {', '.join(TEMPLATES)}, or list "
                "templates with one {} each"
            )
        return TEMPLATES[templates]
    bad = [
        t
        for t in templates
        if not isinstance(t, str)
        or t.count("{}") != 1
        or t.replace("{}", "").count("{")
        or t.replace("{}", "").count("}")
    ]
    if not templates or bad:
        raise DatasetError(
            f"templates must be single, ensemble, or a non-empty list of sentences with one {{}} "
            f'each (where the class name goes), e.g. ["a photo of a {{}}."]; bad: {bad[:3]}'
        )
    return tuple(templates)


def as_json(templates: str | tuple[str, ...]) -> str | list[str]:
    """A prompt set as stores and vocab files record it: its name, or its templates as a list."""
    return templates if isinstance(templates, str) else list(templates)
