"""An example LangGraph workflow: support-ticket triage, no network, used by the README,
the demo and the tests.

    START -> classify -> (lookup_customer | search_kb, in parallel) -> draft -> review -> END

``draft`` is a subgraph (outline -> write). A ticket with ``"slow": true`` makes
``search_kb`` sleep ``slow_s`` seconds; one with ``"fail": true`` makes ``review``
raise, so runs with every outcome are easy to produce.
"""

from __future__ import annotations

import operator
import time
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph


class Ticket(TypedDict, total=False):
    subject: str
    body: str
    slow: bool
    fail: bool
    slow_s: float
    category: str
    customer: str
    facts: Annotated[list[str], operator.add]
    outline: list[str]
    text: str
    approved: bool


class ReviewRejected(RuntimeError):
    """The review step refused the draft (the example's planted failure)."""


def classify(t: Ticket) -> dict[str, Any]:
    words = f"{t.get('subject', '')} {t.get('body', '')}".lower()
    for category, keys in (
        ("billing", ("invoice", "refund", "charge")),
        ("outage", ("down", "error", "500")),
    ):
        if any(k in words for k in keys):
            return {"category": category}
    return {"category": "general"}


def lookup_customer(t: Ticket) -> dict[str, Any]:
    return {"customer": "acme", "facts": ["customer: acme (plan: team)"]}


def search_kb(t: Ticket) -> dict[str, Any]:
    if t.get("slow"):
        time.sleep(float(t.get("slow_s", 0.3)))
    return {"facts": [f"kb: how to handle {t.get('category', 'general')} tickets"]}


class Draft(TypedDict, total=False):
    category: str
    facts: list[str]
    outline: list[str]
    text: str


class DraftOut(TypedDict, total=False):
    outline: list[str]
    text: str


def outline(t: Draft) -> dict[str, Any]:
    return {"outline": ["greet", *t.get("facts", []), "close"]}


def write(t: Draft) -> dict[str, Any]:
    return {"text": f"[{t.get('category')}] " + " / ".join(t.get("outline", []))}


def review(t: Ticket) -> dict[str, Any]:
    if t.get("fail"):
        raise ReviewRejected(f"draft for {t.get('subject', 'ticket')!r} rejected")
    return {"approved": True}


def build_draft() -> Any:
    g: Any = StateGraph(
        Draft, output_schema=DraftOut
    )  # node typing is stricter than LangGraph itself
    g.add_node("outline", outline)
    g.add_node("write", write)
    g.add_edge(START, "outline")
    g.add_edge("outline", "write")
    g.add_edge("write", END)
    return g.compile(name="draft")


def build_graph(name: str = "support-triage") -> Any:
    """The compiled example graph; its name is the default workflow id."""
    g: Any = StateGraph(Ticket)
    g.add_node("classify", classify)
    g.add_node("lookup_customer", lookup_customer)
    g.add_node("search_kb", search_kb)
    g.add_node("draft", build_draft())
    g.add_node("review", review)
    g.add_edge(START, "classify")
    g.add_edge("classify", "lookup_customer")
    g.add_edge("classify", "search_kb")
    g.add_edge(["lookup_customer", "search_kb"], "draft")
    g.add_edge("draft", "review")
    g.add_edge("review", END)
    return g.compile(name=name)
