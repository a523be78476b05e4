"""What the app accepts from users, pure: every field has a type, a size and a range.

Each refusal is an `InvalidInput` whose message is shown to the user as it is
(HTTP 400), and nothing is stored. The limits live here, in one place.
"""

from __future__ import annotations

import json
import math
import re
from datetime import date

from stedi.app.risk import TOTAL_STEPS

MAX_NAME = 100
MAX_EMAIL = 254  # the longest address SMTP allows
MIN_PASSWORD, MAX_PASSWORD = 8, 256
# A manual test: at most a week old (entered late), at most a few minutes ahead (clock skew),
# and between 1 s and 1 hour long (30 steps).
TEST_MAX_AGE_MS = 7 * 24 * 3600 * 1000
TEST_MAX_AHEAD_MS = 5 * 60 * 1000
TEST_MIN_MS, TEST_MAX_MS = 1000, 3600 * 1000
OLDEST_BIRTH_DAY = date(1900, 1, 1)

EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
PHONE = re.compile(r"[0-9+\-() ]{7,20}")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class InvalidInput(ValueError):
    """Form or API input that is refused, with a message for the user."""


def text(value: object, label: str, max_length: int, required: bool = True) -> str:
    """A stripped, printable string of at most `max_length` characters."""
    if not isinstance(value, str):
        raise InvalidInput(f"{label} must be text.")
    if len(value) > max_length:  # before any other work on it
        raise InvalidInput(f"{label} is too long (at most {max_length} characters).")
    value = value.strip()
    if required and not value:
        raise InvalidInput(f"{label} is required.")
    if not value.isprintable():  # control characters, lone surrogates, line breaks
        raise InvalidInput(f"{label} contains characters that are not allowed.")
    return value


def email(value: object, label: str = "Email") -> str:
    value = text(value, label, MAX_EMAIL)
    if not EMAIL.fullmatch(value):
        raise InvalidInput(f"{label} must look like name@example.com.")
    return value


def customer(fields: dict, today: date | None = None) -> dict:
    """The stored Customer entity from form or JSON fields."""
    today = today or date.today()
    name = text(fields.get("customerName", ""), "Name", MAX_NAME)
    address = email(fields.get("email", ""))
    phone = text(fields.get("phone", ""), "Phone", 20)
    if not PHONE.fullmatch(phone):
        raise InvalidInput("Phone must be 7 to 20 digits (spaces, +, -, ( and ) allowed).")
    birth_day = text(fields.get("birthDay", ""), "Birth day", 10)
    try:
        if not ISO_DATE.fullmatch(birth_day):
            raise ValueError
        born = date.fromisoformat(birth_day)
    except ValueError:
        raise InvalidInput("Birth day must be a date (YYYY-MM-DD).") from None
    if not OLDEST_BIRTH_DAY <= born <= today:
        raise InvalidInput("Birth day must be between 1900-01-01 and today.")
    return {"customerName": name, "email": address, "phone": phone, "birthDay": born.isoformat()}


def password(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInput("Password must be text.")
    if not MIN_PASSWORD <= len(value) <= MAX_PASSWORD:
        raise InvalidInput(f"Password must have {MIN_PASSWORD} to {MAX_PASSWORD} characters.")
    return value


def signup(fields: dict) -> tuple[str, str, str]:
    """(user name, email, password) of a new account."""
    return (
        text(fields.get("userName", ""), "Name", MAX_NAME),
        email(fields.get("email", "")),
        password(fields.get("password", "")),
    )


def test_times(body: dict, now_ms: int) -> tuple[int, int]:
    """(start, stop) epoch milliseconds of a finished 30-step test."""
    steps = body.get("totalSteps")
    if type(steps) is not int or steps != TOTAL_STEPS:
        raise InvalidInput(f"A rapid step test has exactly {TOTAL_STEPS} steps.")
    start, stop = body.get("startTime"), body.get("stopTime")
    if type(start) is not int or type(stop) is not int:  # no bools, floats, strings
        raise InvalidInput("startTime and stopTime must be whole epoch milliseconds.")
    earliest, latest = now_ms - TEST_MAX_AGE_MS, now_ms + TEST_MAX_AHEAD_MS
    if not (earliest <= start <= latest and earliest <= stop <= latest):
        raise InvalidInput("startTime and stopTime must be within the last 7 days.")
    if stop <= start:
        raise InvalidInput("A test must stop after it starts.")
    if not TEST_MIN_MS <= stop - start <= TEST_MAX_MS:
        raise InvalidInput("A test lasts between 1 second and 1 hour.")
    return start, stop


MAX_PAGE = 1_000_000


def page_number(value: str) -> int:
    """A `?page=` of a paged list: 1 (the first) to MAX_PAGE."""
    if not (value.isascii() and value.isdigit() and len(value) <= 7):
        raise InvalidInput(f"page must be a whole number from 1 to {MAX_PAGE}.")
    number = int(value)
    if not 1 <= number <= MAX_PAGE:
        raise InvalidInput(f"page must be a whole number from 1 to {MAX_PAGE}.")
    return number


def _no_constant(name: str):
    raise InvalidInput(f"Numbers must be finite: {name} is not allowed.")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):  # 1e999
        raise InvalidInput(f"Numbers must be finite: {literal[:20]} is too large.")
    return value


def json_object(raw: bytes) -> dict:
    """A JSON object from a request body; NaN and Infinity are not JSON and are refused."""
    try:
        body = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except InvalidInput:
        raise
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise InvalidInput("The body must be JSON.") from None
    if not isinstance(body, dict):
        raise InvalidInput("The body must be a JSON object.")
    return body
