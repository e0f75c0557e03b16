"""Validation, normalization and PII redaction of raw conversation events.

Shared by the stream (the ingest service) and the batch path, so both accept the same events
and derive the same ids. Pure functions: no I/O, time passed in.

Order of work, and why:
1. user_id and message are checked and the text normalized (Unicode NFC, control and
   zero-width characters removed, whitespace collapsed);
2. the message_id is the producer's, else derived from the *normalized, unredacted* text, so
   switching redaction on or off never changes an id;
3. PII is redacted last: e-mail addresses (international ones too), IBANs (mod-97 checked),
   card numbers (13 to 19 digits passing the Luhn check), US Social Security numbers and
   phone numbers become ``[email]``, ``[iban]``, ``[card]``, ``[ssn]``, ``[phone]``. Recall
   and false positives are measured on tests/data/pii_labelled.jsonl (docs/security.md).

Ids and tokens are matched whole with ``fullmatch``: with ``match``, the ``$`` of a pattern
also matches just before a final newline, so "u1" followed by a newline would pass as a user
id. The pattern strings keep ``^...$`` because pydantic compiles them with Rust's regex
engine, where ``$`` is the end of the text (and the ``Z`` escape of Python's ``re`` is unknown).

Redaction takes time linear in the text, since a message may be written to make a regex
engine backtrack: the card, SSN and phone patterns start only where their look-behinds allow
once per run of digits (the phone's and the SSN's repeat a bounded number of times, the card's
reads the run once), an IBAN is read from the start of a word for at most its country's
length, and ``email_spans`` tries e-mail addresses from the start of each run of the
characters they are made of, not from every character (bench/redaction.py).

The package: mpp.validation.fields (patterns, limits, normalize_text), .redaction (PII) and
.events (Rules, validate_event); everything is importable from mpp.validation itself.
"""

from mpp.validation.events import Rules, validate_event
from mpp.validation.fields import (
    CAMPAIGN_ID,
    CHANNEL,
    LOCALE,
    MAX_METADATA_KEY_CHARS,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_CHARS,
    MESSAGE_ID,
    MESSAGE_ID_PATTERN,
    USER_ID,
    USER_ID_PATTERN,
    normalize_text,
    stored_ids_rejection,
)
from mpp.validation.redaction import (
    CARD_CANDIDATE,
    EMAIL,
    IBAN_LENGTHS,
    PHONE,
    PII_KINDS,
    SSN,
    SSN_LABELLED,
    PiiSpan,
    card_spans,
    email_spans,
    iban_spans,
    iban_valid,
    luhn_valid,
    phone_spans,
    pii_spans,
    redact_pii,
    ssn_spans,
)

__all__ = [
    "CAMPAIGN_ID",
    "CARD_CANDIDATE",
    "CHANNEL",
    "EMAIL",
    "IBAN_LENGTHS",
    "LOCALE",
    "MAX_METADATA_KEYS",
    "MAX_METADATA_KEY_CHARS",
    "MAX_METADATA_VALUE_CHARS",
    "MESSAGE_ID",
    "MESSAGE_ID_PATTERN",
    "PHONE",
    "PII_KINDS",
    "SSN",
    "SSN_LABELLED",
    "USER_ID",
    "USER_ID_PATTERN",
    "PiiSpan",
    "Rules",
    "card_spans",
    "email_spans",
    "iban_spans",
    "iban_valid",
    "luhn_valid",
    "normalize_text",
    "phone_spans",
    "pii_spans",
    "redact_pii",
    "ssn_spans",
    "stored_ids_rejection",
    "validate_event",
]
