"""Reading what a client sends: the picture form (multipart, JSON or urlencoded) and small
JSON bodies, bounded in size and in how long the body may pause."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from core.errors import BadRequest, ImageRejected, UserFacingError
from core.intake.decode import DecodedImage
from core.intake.moving import decode_upload_async
from core.records import SourceKind
from core.services import Services

T = TypeVar("T")

FIELD_LIMIT = 4096  # bytes of a text form field (url, seconds, seed)
FORM_FIELDS = 64  # fields of a urlencoded form (ours has three)
CHUNK = 64 * 1024


@dataclass
class PictureForm:
    """What one POST /api/jobs carried, before the image is decoded."""

    data: bytes | None = None
    url: str | None = None
    seconds: str | float | int | None = None
    seed: str | int | float | None = None

    @property
    def source_kind(self) -> SourceKind:
        return SourceKind.UPLOAD if self.data is not None else SourceKind.URL


class ClientGone(Exception):
    """The client closed the connection before its request body was read whole."""


def _too_large(limit: int) -> ImageRejected:
    return ImageRejected(f"upload larger than {limit} bytes", code="too_large", max_bytes=limit)


@dataclass(frozen=True)
class _Body:
    """How a request body is read: its size limit, and how long it may pause."""

    max_upload: int
    idle_s: float
    slack: int = CHUNK  # what a JSON or form body may add to `max_upload` (its framing)
    too_big: UserFacingError | None = None  # the refusal of a longer body (else too_large)

    def refusal(self) -> UserFacingError:
        return self.too_big or _too_large(self.max_upload)

    async def step(self, pending: Awaitable[T]) -> T:
        """One read of the body, refused (408) when no bytes come for `idle_s`.

        Besides slow clients, this ends a read aiohttp would never finish: a body whose
        decoding fails only at its end (`Content-Encoding: deflate`), arriving after the
        headers, is answered by aiohttp's parser while the handler's read waits on.
        """
        try:
            async with asyncio.timeout(self.idle_s):
                return await pending
        except TimeoutError:
            raise BadRequest("the request body stopped arriving",
                             code="request_timeout") from None

    async def part(self, part: BodyPartReader, limit: int, error: UserFacingError) -> bytes:
        """Read one multipart part, stopping as soon as it exceeds `limit` bytes."""
        buf = bytearray()
        while chunk := await self.step(part.read_chunk(CHUNK)):
            buf += chunk
            if len(buf) > limit:
                raise error
        return bytes(buf)

    async def whole(self, request: web.Request) -> bytes:
        """A JSON or form body (bounded like aiohttp's `client_max_size`)."""
        if (request.content_length is not None
                and request.content_length > self.max_upload + self.slack):
            raise self.refusal()
        buf = bytearray()
        while chunk := await self.step(request.content.readany()):
            buf += chunk
            if len(buf) > self.max_upload + self.slack:
                raise self.refusal()
        return bytes(buf)


@contextlib.contextmanager
def _unreadable_as_refusals(request: web.Request, body: _Body) -> Iterator[None]:
    """aiohttp's and the connection's failures while a body is read, as refusals."""
    ctype = request.content_type
    try:
        yield
    except web.HTTPRequestEntityTooLarge:
        raise body.refusal() from None
    except (ConnectionError, HttpProcessingError, web.RequestPayloadError) as exc:
        # The body stopped: the client hung up, or sent a broken framing or encoding
        # (aiohttp's parser errors, e.g. a multipart header line over 8 KB, bad gzip).
        transport = request.transport
        if isinstance(exc, ConnectionError) or transport is None or transport.is_closing():
            raise ClientGone() from None
        code = "bad_form" if ctype == "multipart/form-data" else "bad_request"
        raise BadRequest(f"unreadable body ({type(exc).__name__})", code=code) from None
    except ValueError:
        # aiohttp's multipart reader: no boundary, a missing boundary, a body cut short.
        if ctype != "multipart/form-data":
            raise
        raise BadRequest("malformed multipart body", code="bad_form") from None


async def read_picture_form(request: web.Request, max_upload: int, idle_s: float
                            ) -> PictureForm:
    """Parse multipart (`image`, `url`, `seconds`, `seed`) or JSON into a `PictureForm`."""
    if request.content_length is not None and request.content_length > max_upload + CHUNK:
        raise _too_large(max_upload)
    body = _Body(max_upload, idle_s)
    with _unreadable_as_refusals(request, body):
        return await _read_picture_form(request, request.content_type, body)


async def read_json_object(request: web.Request, limit: int, idle_s: float,
                           too_long: UserFacingError) -> dict[str, Any]:
    """A small JSON object body of at most `limit` bytes (longer ones: `too_long`)."""
    not_json = BadRequest("body is not a JSON object", code="bad_json")
    if request.content_type not in ("application/json", ""):
        raise not_json
    body = _Body(limit, idle_s, slack=0, too_big=too_long)
    with _unreadable_as_refusals(request, body):
        return _json_object(await _body_text(request, body, not_json), not_json)


def _json_object(text: str, not_json: BadRequest) -> dict[str, Any]:
    """The JSON object in `text`; anything else (or no JSON at all) is `not_json`."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
        raise not_json from None
    if not isinstance(value, dict):
        raise not_json
    return value


async def _body_text(request: web.Request, body: _Body, unreadable: BadRequest) -> str:
    """The body decoded with its declared charset (UTF-8 if none); a charset Python does
    not know as a text encoding is refused as such, undecodable bytes as `unreadable`."""
    charset = request.charset or "utf-8"
    try:
        codec = codecs.lookup(charset)
    except (LookupError, ValueError):  # ValueError: a name with a NUL in it
        raise BadRequest("unknown charset", code="bad_charset") from None
    raw = await body.whole(request)
    try:
        return raw.decode(codec.name)
    except LookupError:  # a codec that is not a text encoding (base64, zlib, rot13…)
        raise BadRequest("not a text charset", code="bad_charset") from None
    except ValueError:  # UnicodeDecodeError, or a codec's own refusal
        raise unreadable from None


async def _read_picture_form(request: web.Request, ctype: str, body: _Body
                             ) -> PictureForm:
    posted = PictureForm()
    if ctype == "multipart/form-data":
        reader = await request.multipart()
        while (part := await body.step(reader.next())) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "image":
                limit = body.max_upload
                data = await body.part(part, limit, _too_large(limit))
                if data:  # an empty file field means "no file chosen"
                    posted.data = data
            elif part.name in ("url", "seconds", "seed"):
                bad = BadRequest(f"field {part.name} is too long", code="bad_option")
                value = (await body.part(part, FIELD_LIMIT, bad)).decode("utf-8", "replace")
                setattr(posted, part.name, value)
            else:
                while await body.step(part.read_chunk(CHUNK)):
                    pass  # a field we do not use: read past it
    elif ctype in ("application/json", ""):
        not_json = BadRequest("body is not a JSON object", code="bad_json")
        fields = _json_object(await _body_text(request, body, not_json), not_json)
        url = fields.get("url")
        if url is not None and not isinstance(url, str):
            raise ImageRejected("url must be a string", code="bad_url")
        posted.url, posted.seconds, posted.seed = (url, fields.get("seconds"),
                                                   fields.get("seed"))
    elif ctype == "application/x-www-form-urlencoded":
        bad_form = BadRequest("malformed form", code="bad_form")
        text = await _body_text(request, body, bad_form)
        try:
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=FORM_FIELDS,
                              encoding=codecs.lookup(request.charset or "utf-8").name,
                              errors="replace")
        except (ValueError, LookupError):  # too many fields
            raise bad_form from None
        form: dict[str, str] = {}
        for name, value in pairs:
            form.setdefault(name, value)  # the first of repeated fields, as aiohttp's post()
        posted.url = form.get("url")
        posted.seconds, posted.seed = form.get("seconds"), form.get("seed")
    else:
        raise BadRequest(f"unsupported content type {ctype}", code="bad_content_type")
    if isinstance(posted.url, str):
        posted.url = posted.url.strip() or None
    return posted


async def load_image(services: Services, posted: PictureForm) -> DecodedImage:
    """Decode the upload, or fetch the link through the SSRF-safe fetcher."""
    metrics = services.ops.metrics
    data = posted.data
    if data is None:
        assert posted.url, "submit_job refuses a request with neither a picture nor a link"
        config = services.config
        with metrics.stage("fetch"):
            data = await services.fetcher.fetch(
                posted.url, max_bytes=max(config.images.max_bytes, config.video.max_bytes))
    with metrics.stage("decode"):
        return await decode_upload_async(data, services.config.images, services.config.video)

