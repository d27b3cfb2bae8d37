"""Every text a chat user reads, in every language we support, in one place.

Adding a language is adding one dictionary to `CATALOGUE` with the same keys
(a test checks that every language has every key and the same placeholders).
"""

from __future__ import annotations

import math
from typing import Any

from core.errors import UserFacingError

DEFAULT_LANGUAGE = "en"

CATALOGUE: dict[str, dict[str, str]] = {
    "en": {
        # status and results
        "queued": "Queued — #{position} in line",
        "started": "Listening to your picture…",
        "progress": "Rendering sound… {percent}%",
        "done": "Done: {caption}",
        "caption": "🔊 {caption}",
        "cached": "(from cache)",
        "another_take": "Another take",
        "use_my_words": "Use my words",
        "ask_words": "Type a short description of the sound you want (for example: rain on a tin roof).",
        "words_label": "Describe the sound",
        "words_placeholder": "rain on a tin roof, distant thunder",
        "not_yours": "Only the person who asked can use these buttons.",
        "expired": "That request is no longer available. Send the picture again.",
        "interrupted": "Sorry — the bot restarted while working on your picture. Please send it again.",
        "no_image_in_reply": "Reply to a message with a photo, an image file or an image link, or add a link after /sonify.",
        "stats_denied": "Sorry, that command is only for the bot's admins.",
        "help": (
            "Send me a picture and I will tell you what it sounds like.\n\n"
            "• Send a photo, an image file (JPEG, PNG, WebP, GIF, BMP, TIFF) or a link to one.\n"
            "• /sonify <link> — or reply /sonify to a message with a picture.\n"
            "• Options: /sonify 8s seed=42 <link> (length up to {max_seconds:g} s).\n"
            "• Images up to {max_mb:g} MB. Up to {per_hour} requests per hour.\n\n"
            "I describe the picture with an image-captioning model and turn the description "
            "into a short sound clip with an audio-generation model."
        ),
        # errors
        "error.bad_url": "That link doesn't look like a web address (http or https).",
        "error.blocked_address": "I can't fetch that link: it points to a private or local network.",
        "error.fetch_failed": "I couldn't download that link. Check that it opens in a browser.",
        "error.fetch_timeout": "The server behind that link took too long to answer.",
        "error.too_large": "That file is too large — the limit is {max_mb:g} MB.",
        "error.empty": "That file is empty.",
        "error.not_image": "That isn't an image. Send a JPEG, PNG, WebP, GIF, BMP or TIFF picture.",
        "error.unsupported_format": "{format} files aren't supported. Send a JPEG, PNG, WebP, GIF, BMP or TIFF picture.",
        "error.too_many_pixels": "That image has too many pixels to process safely.",
        "error.bad_dimensions": "That image's dimensions are not usable.",
        "error.corrupt": "That image file is damaged or incomplete.",
        "error.bad_option": "One of the options is not valid.",
        "error.bad_seconds": "The length must be between 0.5 and {max_seconds:g} seconds.",
        "error.bad_seed": "The seed must be a whole number between 0 and {max_seed}.",
        "error.busy": "I'm very busy right now. Please try again in about {wait}.",
        "error.too_many_running": "You already have requests in progress. Try again in about {wait}.",
        "error.hourly_limit": "You've reached the limit of requests per hour. Try again in {wait}.",
        "error.failed": "Sorry, generating the sound failed. Please try again.",
        "error.timeout": "Sorry, that took too long and was stopped. Please try again.",
        "error.interrupted": "Sorry — the bot restarted while working on your picture. Please send it again.",
        "error.shutting_down": "The bot is restarting. Please try again in a minute.",
        "error.missing_permissions": "I don't have permission to post here (I need to send messages and attach files).",
        "error.no_image": "I couldn't find an image in that message.",
        "error.no_image_option": "Attach an image or give a link: /sonify image:<file> or /sonify url:<link>.",
        # Discord command descriptions (shown in the command picker)
        "cmd.sonify": "Turn a picture into a short sound clip",
        "cmd.sonify.image": "The picture to listen to",
        "cmd.sonify.url": "A link to a picture (instead of attaching one)",
        "cmd.sonify.seconds": "Length of the clip in seconds",
        "cmd.sonify.seed": "Random seed: the same seed gives the same sound again",
        "cmd.stats": "Usage statistics (admins only)",
        "cmd.context": "Sonify this image",
        # durations
        "seconds": "{n} s",
        "minutes": "{n} min",
        # Telegram command menu (setMyCommands)
        "telegram.cmd_sonify": "Turn a picture into sound (add a link or reply to a picture)",
        "telegram.cmd_help": "What this bot does and how to use it",
        "telegram.cmd_stats": "Usage statistics (admins only)",
    },
    "es": {
        "queued": "En cola — #{position} en la fila",
        "started": "Escuchando tu imagen…",
        "progress": "Generando el sonido… {percent}%",
        "done": "Listo: {caption}",
        "caption": "🔊 {caption}",
        "cached": "(de la caché)",
        "another_take": "Otra toma",
        "use_my_words": "Usar mis palabras",
        "ask_words": "Escribe una breve descripción del sonido que quieres (por ejemplo: lluvia sobre un techo de chapa).",
        "words_label": "Describe el sonido",
        "words_placeholder": "lluvia sobre un techo de chapa, truenos lejanos",
        "not_yours": "Solo quien hizo la petición puede usar estos botones.",
        "expired": "Esa petición ya no está disponible. Envía la imagen de nuevo.",
        "interrupted": "Lo siento: el bot se reinició mientras trabajaba en tu imagen. Envíala de nuevo, por favor.",
        "no_image_in_reply": "Responde a un mensaje con una foto, un archivo de imagen o un enlace, o añade un enlace después de /sonify.",
        "stats_denied": "Lo siento, ese comando es solo para los administradores del bot.",
        "help": (
            "Envíame una imagen y te diré cómo suena.\n\n"
            "• Envía una foto, un archivo de imagen (JPEG, PNG, WebP, GIF, BMP, TIFF) o un enlace.\n"
            "• /sonify <enlace> — o responde /sonify a un mensaje con una imagen.\n"
            "• Opciones: /sonify 8s seed=42 <enlace> (duración hasta {max_seconds:g} s).\n"
            "• Imágenes de hasta {max_mb:g} MB. Hasta {per_hour} peticiones por hora.\n\n"
            "Describo la imagen con un modelo de subtitulado de imágenes y convierto la "
            "descripción en un breve clip de sonido con un modelo de generación de audio."
        ),
        "error.bad_url": "Ese enlace no parece una dirección web (http o https).",
        "error.blocked_address": "No puedo abrir ese enlace: apunta a una red privada o local.",
        "error.fetch_failed": "No pude descargar ese enlace. Comprueba que se abre en un navegador.",
        "error.fetch_timeout": "El servidor de ese enlace tardó demasiado en responder.",
        "error.too_large": "Ese archivo es demasiado grande: el límite es {max_mb:g} MB.",
        "error.empty": "Ese archivo está vacío.",
        "error.not_image": "Eso no es una imagen. Envía una imagen JPEG, PNG, WebP, GIF, BMP o TIFF.",
        "error.unsupported_format": "Los archivos {format} no son compatibles. Envía una imagen JPEG, PNG, WebP, GIF, BMP o TIFF.",
        "error.too_many_pixels": "Esa imagen tiene demasiados píxeles para procesarla con seguridad.",
        "error.bad_dimensions": "Las dimensiones de esa imagen no son válidas.",
        "error.corrupt": "Ese archivo de imagen está dañado o incompleto.",
        "error.bad_option": "Una de las opciones no es válida.",
        "error.bad_seconds": "La duración debe estar entre 0.5 y {max_seconds:g} segundos.",
        "error.bad_seed": "La semilla debe ser un número entero entre 0 y {max_seed}.",
        "error.busy": "Estoy muy ocupado ahora mismo. Inténtalo de nuevo en unos {wait}.",
        "error.too_many_running": "Ya tienes peticiones en curso. Inténtalo de nuevo en unos {wait}.",
        "error.hourly_limit": "Has alcanzado el límite de peticiones por hora. Inténtalo de nuevo en {wait}.",
        "error.failed": "Lo siento, no se pudo generar el sonido. Inténtalo de nuevo.",
        "error.timeout": "Lo siento, tardó demasiado y se detuvo. Inténtalo de nuevo.",
        "error.interrupted": "Lo siento: el bot se reinició mientras trabajaba en tu imagen. Envíala de nuevo, por favor.",
        "error.shutting_down": "El bot se está reiniciando. Inténtalo de nuevo en un minuto.",
        "error.missing_permissions": "No tengo permiso para publicar aquí (necesito enviar mensajes y adjuntar archivos).",
        "error.no_image": "No encontré ninguna imagen en ese mensaje.",
        "error.no_image_option": "Adjunta una imagen o da un enlace: /sonify image:<archivo> o /sonify url:<enlace>.",
        "cmd.sonify": "Convierte una imagen en un breve clip de sonido",
        "cmd.sonify.image": "La imagen que quieres escuchar",
        "cmd.sonify.url": "Un enlace a una imagen (en lugar de adjuntarla)",
        "cmd.sonify.seconds": "Duración del clip en segundos",
        "cmd.sonify.seed": "Semilla aleatoria: la misma semilla da otra vez el mismo sonido",
        "cmd.stats": "Estadísticas de uso (solo administradores)",
        "cmd.context": "Sonificar esta imagen",
        "seconds": "{n} s",
        "minutes": "{n} min",
        "telegram.cmd_sonify": "Convierte una imagen en sonido (añade un enlace o responde a una imagen)",
        "telegram.cmd_help": "Qué hace este bot y cómo usarlo",
        "telegram.cmd_stats": "Estadísticas de uso (solo administradores)",
    },
}


def pick_language(code: str | None) -> str:
    """Map a platform locale (`es`, `es-ES`, `es_419`, `en-US`, None) to a catalogue language."""
    if not code:
        return DEFAULT_LANGUAGE
    base = code.replace("_", "-").split("-")[0].lower()
    return base if base in CATALOGUE else DEFAULT_LANGUAGE


def t(key: str, lang: str = DEFAULT_LANGUAGE, **params: Any) -> str:
    """The text for `key` in `lang` (falling back to English), formatted with `params`."""
    table = CATALOGUE.get(lang, CATALOGUE[DEFAULT_LANGUAGE])
    template = table.get(key) or CATALOGUE[DEFAULT_LANGUAGE][key]
    return template.format(**params)


def format_wait(seconds: float, lang: str = DEFAULT_LANGUAGE) -> str:
    """A short human duration: `40 s`, `3 min`."""
    seconds = max(1, math.ceil(seconds))
    if seconds < 90:
        return t("seconds", lang, n=seconds)
    return t("minutes", lang, n=math.ceil(seconds / 60))


def describe_error(error: BaseException, lang: str = DEFAULT_LANGUAGE) -> str:
    """The user-facing text for any exception; unknown ones get the generic failure text."""
    if not isinstance(error, UserFacingError):
        return t("error.failed", lang)
    key = f"error.{error.code}"
    if key not in CATALOGUE[DEFAULT_LANGUAGE]:
        return t("error.failed", lang)
    params: dict[str, Any] = dict(error.params)
    if "retry_after_s" in params:
        params["wait"] = format_wait(float(params["retry_after_s"]), lang)
    if "max_bytes" in params and "max_mb" not in params:
        params["max_mb"] = params["max_bytes"] / 1_000_000
    try:
        return t(key, lang, **params)
    except (KeyError, ValueError, IndexError):
        return t("error.failed", lang)
