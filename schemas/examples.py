"""Bundled output schemas: small pydantic models that a record can name in its ``schema`` field.

    {"prompt": "Alice and Bob are going to a science fair on Friday.", "schema": "CalendarEvent"}

Gemini does not support recursive schemas, and unions of primitives have failed on Google's side: keep models flat
and give lists and strings bounds (``max_length``) so small models cannot loop forever.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["CalendarEvent", "ContactInfo", "Sentiment", "ProductReview"]


class CalendarEvent(BaseModel):
    """The example from Google's OpenAI-compatibility guide."""

    name: str = Field(max_length=200)
    date: str = Field(max_length=50)
    participants: list[str] = Field(max_length=20)


class Sentiment(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float = Field(ge=0.0, le=1.0)


class ContactInfo(BaseModel):
    name: str = Field(max_length=200)
    email: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=50)
    company: str | None = Field(default=None, max_length=200)


class ProductReview(BaseModel):
    product: str = Field(max_length=200)
    rating: int = Field(ge=1, le=5)
    pros: list[str] = Field(max_length=5)
    cons: list[str] = Field(max_length=5)
    summary: str = Field(max_length=500)
