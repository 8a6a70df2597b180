"""
Draw what the approver sees in Messenger: the question the sandbox delivered, as an image for the
README (``docs/approval-question.png``).

Sends the refund question of ``example_ahachat_refund_approval`` to Mai through a sandbox, reads the
outbox entry back, draws it as a chat bubble with its buttons in Debian's chromium (Playwright's
driver, no browser download) and saves a screenshot. Run: ``uv run python scripts/approval_screenshot.py``.
"""

from __future__ import annotations

import html
import sys
from pathlib import Path

from airflow_provider_ahachat.client import AhaChatClient
from airflow_provider_ahachat.inbound.question import labels_for, question_message
from airflow_provider_ahachat.sandbox import SandboxServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from browser_helpers import CHROMIUM_ARGS as ARGS

MAI = "6620193847561029"  # the shop owner in the sandbox's seed, who wrote 5 minutes ago
OUT = Path(__file__).resolve().parent.parent / "docs" / "approval-question.png"


def page(entry: dict) -> str:
    """The outbox entry as a Messenger-like bubble: the text, then one row per button."""
    message = entry["messages"][0]
    payload = message.get("attachment", {}).get("payload", {})
    text = payload.get("text") or message.get("text", "")
    buttons = payload.get("buttons") or message.get("quick_replies") or []
    rows = "".join(f'<div class="b">{html.escape(b["title"])}</div>' for b in buttons)
    return f"""<html><head><meta charset="utf-8"><style>
    body {{ font-family: sans-serif; background: #fff; margin: 16px; width: 340px; }}
    .who {{ color: #65676b; font-size: 12px; margin: 0 0 4px 8px; }}
    .q {{ background: #f0f0f0; border-radius: 18px 18px 0 0; padding: 10px 14px; font-size: 15px; }}
    .b {{ border: 1px solid #e4e6eb; text-align: center; padding: 9px; color: #0084ff; font-weight: 600; }}
    .b:last-child {{ border-radius: 0 0 18px 18px; }}
    </style></head><body><div class="who">Shop Thời Trang Lan Anh</div>
    <div class="q">{html.escape(text)}</div>{rows}</body></html>"""


def main() -> int:
    from playwright.sync_api import sync_playwright

    options = labels_for(["Approve", "Reject"], None)
    with SandboxServer() as sandbox, AhaChatClient(sandbox.bot_id, sandbox.token, sandbox.url) as client:
        message = question_message(
            "Duyệt hoàn tiền 450.000đ cho đơn DH10231?",
            "Khách: Nguyễn Thị Lan. Lý do: giao sai size.",
            options,
            answer_url=lambda option, label: (
                f"https://airflow.example.vn/ahachat/approvals/answer?t={option}"
            ),
            ui_url=None,
        )
        client.run("send_message", {"message": message}, user_id=MAI)
        (entry,) = sandbox.outbox(MAI)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        try:
            tab = browser.new_page(viewport={"width": 372, "height": 240})
            tab.set_content(page(entry))
            tab.screenshot(path=str(OUT), full_page=True)
        finally:
            browser.close()
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
