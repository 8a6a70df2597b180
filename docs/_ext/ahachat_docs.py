"""
The docs site's own directives, tables read from the code so that the reference cannot drift from it.

- ``ahachat-connection-fields``: the connection form's fields, from the provider's metadata
  (``get_provider_info``: ``conn-fields`` and ``ui-field-behaviour``), the same place Airflow's
  connection form is built from.
- ``ahachat-actions``: every action of the registry (``airflow_provider_ahachat.registry.ACTIONS``),
  with its endpoints, its arguments and whether it messages someone.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.application import Sphinx

#: The standard fields the form keeps, with what they hold.
STANDARD_FIELDS = {
    "login": "The bot's ID, digits only (`12404829`).",
    "password": "The bot's token, from the bot's Settings in AhaChat.",
}

#: Extras the hook reads that the form does not show: set them in the connection's JSON extra or URI.
EXTRAS_WITHOUT_A_FIELD = {
    "default_country_code": "The country of phone numbers written without one (`0908 071 111`); "
    "default `84`, Vietnam. Not in the form: set it in the extra JSON or the URI's query.",
}


def _table(rows: list[list[str]], widths: list[int]) -> nodes.table:
    table = nodes.table()
    group = nodes.tgroup(cols=len(widths))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head, body = nodes.thead(), nodes.tbody()
    group += head
    group += body
    for index, cells in enumerate(rows):
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            paragraph = nodes.paragraph()
            for n, part in enumerate(cell.split("`")):
                paragraph += nodes.literal(part, part) if n % 2 else nodes.Text(part)
            entry += paragraph
            row += entry
        (head if index == 0 else body).append(row)
    return table


class ConnectionFields(Directive):
    """The form's fields: label, where the value is kept, and what it means."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from airflow_provider_ahachat.get_provider_info import get_provider_info

        (connection,) = get_provider_info()["connection-types"]
        behaviour: dict[str, Any] = connection["ui-field-behaviour"]
        rows = [["Field in the form", "Stored as", "What it holds"]]
        for name, text in STANDARD_FIELDS.items():
            rows.append([behaviour["relabeling"][name], f"`{name}`", text])
        for name, field in connection["conn-fields"].items():
            rows.append([field["label"], f"extra `{name}`", field["description"]])
        for name, text in EXTRAS_WITHOUT_A_FIELD.items():
            rows.append(["(none)", f"extra `{name}`", text])
        return [_table(rows, [20, 20, 60])]


def _arguments(action: Any) -> str:
    """An action's arguments: required ones plain, optional ones marked, templated ones marked."""
    if not action.arguments:
        return "(none)"
    parts = []
    for argument in action.arguments:
        text = f"`{argument.name}`"
        if argument.aliases:
            text += f" (or `{'`, `'.join(argument.aliases)}`)"
        if not argument.required:
            text += " optional"
        if not argument.templated:
            text += " not templated"
        parts.append(text)
    return ", ".join(parts)


class Actions(Directive):
    """The registry's actions: name, endpoints, arguments, whether it messages a customer."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from airflow_provider_ahachat.registry import ACTIONS

        rows = [["Action", "Endpoints (name: method and path)", "Arguments", "Messages"]]
        for name, action in ACTIONS.items():
            endpoints = "; ".join(
                f"{endpoint.name}: `{endpoint.method} {endpoint.path}`"
                + ("" if endpoint.documented else " (provisional)")
                for endpoint in action.endpoints
            )
            rows.append([f"`{name}`", endpoints, _arguments(action), "yes" if action.messages else "no"])
        return [_table(rows, [16, 44, 30, 10])]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("ahachat-connection-fields", ConnectionFields)
    app.add_directive("ahachat-actions", Actions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
