"""`kubectl mta queue`: the options turned into the admin API's requests, and every MTA's answers
(``/admin/v1/queue...``) merged into one view. Pure: options and answers in, request bodies and text out.
The request and answer shapes are ``mta_relay.queue_admin``'s; this module only checks options early (so a
typo is named before any MTA is asked) and renders."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from mta_relay import queue_admin

from . import table

Answers = Mapping[str, Mapping[str, Any]]  # pod name → its JSON answer


_OPTIONS = {"id": "ID", "domain": "--domain", "sender": "--sender", "all": "--all"}


def selector(allowed: Sequence[queue_admin.SelectorKind], *, queue_id: str | None = None,
             domain: str | None = None, sender: str | None = None,
             everything: bool = False) -> dict[str, Any]:
    """The body of a retry or bounce: exactly one of the ``allowed`` selectors (a queue ID, ``--domain``,
    ``--sender``, ``--all``). ValueError names the option."""
    values: dict[str, object] = {"id": queue_id, "domain": domain, "sender": sender,
                                 "all": True if everything else None}
    given = {k: v for k, v in values.items() if v is not None}
    names = ", ".join(_OPTIONS[k] for k in allowed)
    if len(given) != 1 or next(iter(given)) not in allowed:
        got = ", ".join(_OPTIONS[k] for k in given)
        raise ValueError(f"give exactly one of {names}" + (f" (got {got})" if got else ""))
    try:
        return queue_admin.parse_selector(given, allowed).to_json()
    except queue_admin.BadParameter as error:
        option = _OPTIONS[error.name]
        raise ValueError(f"{option} {given[error.name]!r}: {str(error).split(': ', 1)[1]}") from None


def target(*, domain: str | None, credential: str | None) -> dict[str, str]:
    """The body of a suspend or resume: ``--domain`` or ``--credential``."""
    if (domain is None) == (credential is None):
        raise ValueError("give exactly one of --domain, --credential")
    raw = {"domain": domain} if domain is not None else {"credential": credential}
    try:
        return queue_admin.parse_target(raw).to_json()
    except queue_admin.BadParameter as error:
        option = "--domain" if domain is not None else "--credential"
        raise ValueError(f"{option} {domain or credential!r}: {str(error).split(': ', 1)[1]}") from None


def reason(text: str) -> str:
    try:
        return queue_admin.parse_reason({"reason": text})
    except queue_admin.BadParameter as error:
        raise ValueError(f"--reason: {str(error).split(': ', 1)[1]}") from None


# --- rendering ------------------------------------------------------------------------------------
def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float) -> str:
    """kubectl's AGE style: 45s, 12m, 5h, 3d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _warnings(failed: Mapping[str, str], what: str) -> list[str]:
    return [f"warning: {mta} did not answer ({why}); {what}" for mta, why in sorted(failed.items())]


def merged_ls(answers: Answers) -> dict[str, Any]:
    """The merged summary, suspensions and per-MTA totals (``-o json`` prints this)."""
    return {"summary": queue_admin.merge_summaries(answers.values()),
            "suspensions": queue_admin.merge_suspensions(answers.values()),
            "messages": {mta: int(a.get("messages", 0)) for mta, a in sorted(answers.items())}}


def render_ls(answers: Answers, failed: Mapping[str, str], now: float) -> str:
    merged = merged_ls(answers)
    rows = [[g["domain"], g["state"], str(g["messages"]), duration(now - float(g["oldest"])),
             *(str(g["ages"].get(label, 0)) for label in queue_admin.AGE_LABELS)]
            for g in merged["summary"]]
    lines = [table.render(["DESTINATION", "STATE", "MESSAGES", "OLDEST", *queue_admin.AGE_LABELS], rows)
             if rows else "the queue is empty"]
    per_mta = ", ".join(f"{mta}: {n}" for mta, n in merged["messages"].items())
    lines.append(f"{sum(merged['messages'].values())} messages queued on {len(answers)} MTAs ({per_mta})")
    for hold in merged["suspensions"]:
        where = ("every MTA" if len(hold["mtas"]) == len(answers)
                 else f"only on {', '.join(hold['mtas'])}: suspend again to reach the others")
        lines.append(f"suspended: {hold['kind']} {hold['value']} by {hold['by'] or '?'} since "
                     f"{_when(float(hold['at']))} ({where})")
    return "\n".join(lines + _warnings(failed, "its queue is not counted"))


def render_show(answer: Mapping[str, Any], now: float, body: bytes | None = None) -> str:
    env = answer["envelope"]
    next_at = answer.get("next_attempt")
    head = [f"queue id {answer['id']}  on {answer.get('mta') or '?'}  {answer['state']}  "
            f"attempts {answer['attempts']}" +
            (f"  next attempt {_when(next_at)} (in {duration(next_at - now)})" if next_at else ""),
            f"  from {env['sender'] or '<>'}  credential {env['credential'] or '-'}  client "
            f"{env['client_ip'] or '-'} ({env['source']})  size {env['size']}",
            f"  received {_when(env['received_at'])} ({duration(now - env['received_at'])} ago)  "
            f"Message-ID {env['message_id'] or '-'}"]
    rows = [[r["recipient"], r["state"], _when(r["at"]) if r.get("at") else "-", r.get("reply") or "-"]
            for r in answer["recipients"]]
    lines = [*head, "", table.render(["RECIPIENT", "STATE", "AT", "LAST REPLY"], rows)]
    if body is not None:
        lines += ["", "--- message ---", body.decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\n")]
    return "\n".join(lines)


def _by_mta(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{mta}: {n}" for mta, n in sorted(counts.items()) if n)


def render_action(action: str, answers: Answers, failed: Mapping[str, str]) -> str:
    """One line for what every MTA did, then a warning per MTA that did not answer."""
    if action == "retry":
        retried = {m: len(a.get("retried") or []) for m, a in answers.items()}
        lines = [f"retrying now: {sum(retried.values())} messages" +
                 (f" ({_by_mta(retried)})" if any(retried.values()) else "")]
        in_flight = sum(len(a.get("in_flight") or []) for a in answers.values())
        held = sum(len(a.get("suspended") or []) for a in answers.values())
        if in_flight:
            lines.append(f"{in_flight} being delivered already")
        if held:
            lines.append(f"{held} held by a suspension: resume it first")
    elif action == "bounce":
        bounced = [b for a in answers.values() for b in a.get("bounced") or []]
        recipients = sum(len(b["recipients"]) for b in bounced)
        dsns = sum(1 for b in bounced if b.get("dsn"))
        per = {m: len(a.get("bounced") or []) for m, a in answers.items()}
        lines = [f"returned to the sender: {recipients} recipients of {len(bounced)} messages" +
                 (f" ({_by_mta(per)})" if bounced else "") +
                 f"; {dsns} DSNs queued (none to the null sender)"]
        in_flight = sum(len(a.get("in_flight") or []) for a in answers.values())
        if in_flight:
            lines.append(f"{in_flight} being delivered right now, not returned: try again in a moment")
    else:
        found = [a.get("suspended") or a.get("resumed") or {} for a in answers.values()]
        target_json: Mapping[str, str] = found[0] if found else {}
        what = " ".join(f"{k} {v}" for k, v in target_json.items())
        if action == "suspend":
            held = sum(int(a.get("held", 0)) for a in answers.values())
            lines = [f"suspended {what} on {len(answers)} MTAs: {held} messages held now; new mail for it "
                     "waits too, never bounced for it"]
        else:
            released = sum(int(a.get("released", 0)) for a in answers.values())
            changed = sum(1 for a in answers.values() if a.get("changed"))
            lines = [f"resumed {what} on {len(answers)} MTAs ({changed} had it): {released} messages due now"]
    return "\n".join(lines + _warnings(failed, "it was not asked"))
