"""
The question as Messenger shows it: the subject and body, and one button per option.

Messenger allows at most 3 buttons on a message and 13 quick replies, so up to 3 options become
buttons, up to 13 become quick replies, and more (or a question that takes several options at
once) become one button that opens the task's "Required actions" page in Airflow's UI. Every
button and quick reply is a ``json_plugin_url`` one: tapping it makes AhaChat call its URL. Plain
Python: no Airflow import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.models import (
    MAX_BUTTON_TEMPLATE_TEXT,
    MAX_BUTTON_TITLE,
    MAX_BUTTONS,
    MAX_QUICK_REPLIES,
    MAX_TEXT,
)

__all__ = ["DEFAULT_LABELS", "UI_BUTTON_TITLE", "labels_for", "question_message"]

#: What the buttons of Airflow's ``ApprovalOperator`` options say unless told otherwise.
DEFAULT_LABELS = {"Approve": "Đồng ý", "Reject": "Từ chối"}
#: The button that opens Airflow's "Required actions" page.
UI_BUTTON_TITLE = "Trả lời ở Airflow"
_ELLIPSIS = "…"


def labels_for(options: Sequence[str], labels: dict[str, str] | None) -> list[tuple[str, str]]:
    """
    Each option with the title of its button: ``labels[option]``, else the default Vietnamese
    label of Approve and Reject, else the option itself.

    :raises AhaChatValidationError: a title longer than Messenger's 20 characters, or a label for
        an option there is not.
    """
    labels = dict(labels or {})
    problems = [f"option_labels[{name!r}]: no such option" for name in labels if name not in options]
    pairs = []
    for option in options:
        title = str(labels.get(option, DEFAULT_LABELS.get(option, option))).strip()
        if not title or len(title) > MAX_BUTTON_TITLE:
            problems.append(
                f"option_labels[{option!r}]: a button title must be 1 to {MAX_BUTTON_TITLE} characters,"
                f" got {len(title)} ({title!r}); give a shorter label"
            )
        pairs.append((option, title))
    if problems:
        raise AhaChatValidationError(problems)
    return pairs


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(_ELLIPSIS)].rstrip() + _ELLIPSIS


def question_message(
    subject: str,
    body: str | None,
    options: Sequence[tuple[str, str]],
    *,
    answer_url: Callable[[str, str], str],
    ui_url: str | None,
    multiple: bool = False,
) -> dict[str, Any]:
    """
    The dynamic message that asks the question.

    :param subject: the rendered subject.
    :param body: the rendered body, if any.
    :param options: each option with its button title (:func:`labels_for`).
    :param answer_url: the URL a button calls, from its option and title.
    :param ui_url: the task's "Required actions" page, for questions no tap can answer.
    :param multiple: the question takes several options at once: only the UI can answer it.
    """
    text = subject.strip() + (f"\n\n{body.strip()}" if body and body.strip() else "")
    taps = not multiple and len(options) <= MAX_QUICK_REPLIES
    if taps and len(options) <= MAX_BUTTONS:
        buttons = [
            {"type": "json_plugin_url", "url": answer_url(option, title), "title": title}
            for option, title in options
        ]
        return {"messages": [_button_template(text, buttons)]}
    if taps:
        replies = [
            {"type": "json_plugin_url", "url": answer_url(option, title), "title": title}
            for option, title in options
        ]
        return {"messages": [{"text": _fit(text, MAX_TEXT), "quick_replies": replies}]}
    if not ui_url:
        raise AhaChatValidationError(
            "options: a question with more than 13 options, or several at once, is answered in"
            " Airflow's UI, and [api] base_url is not set"
        )
    button = {"type": "web_url", "url": ui_url, "title": UI_BUTTON_TITLE}
    return {"messages": [_button_template(text, [button])]}


def _button_template(text: str, buttons: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "attachment": {
            "type": "template",
            "payload": {
                "template_type": "button",
                "text": _fit(text, MAX_BUTTON_TEMPLATE_TEXT),
                "buttons": buttons,
            },
        }
    }
