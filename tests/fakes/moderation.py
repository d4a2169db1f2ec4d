"""A fake moderation service shaped like OpenAI's: a real aiohttp server on loopback.

POST {"input": text} answers {"results": [{"flagged": bool}]}: flagged when the text contains one of
`flag_words` (case-insensitive). `delay` holds every answer that long; `status` other than 200 fails it.
Every input it was asked about is kept in `inputs`.
"""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web


class FakeModeration:
    def __init__(self, *flag_words: str) -> None:
        self.flag_words = [w.lower() for w in flag_words]
        self.delay = 0.0
        self.status = 200
        self.inputs: list[str] = []
        self.url = ""
        self.app = web.Application()
        self.app.router.add_post("/v1/moderations", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        text = orjson.loads(await request.read())["input"]
        self.inputs.append(text)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            return web.Response(status=self.status, text="overloaded")
        flagged = any(word in text.lower() for word in self.flag_words)
        body = {"id": "modr-fake", "model": "omni-moderation-latest",
                "results": [{"flagged": flagged, "categories": {}, "category_scores": {}}]}
        return web.Response(body=orjson.dumps(body), content_type="application/json")
