"""The fake Discord's store (Premium Apps): SKUs, entitlements, their REST routes and gateway events.

A mixin of `FakeDiscord` (kept apart from the interaction fake). It does what Discord documents
(https://discord.com/developers/docs/resources/sku, /resources/entitlement, /monetization) and refuses what
Discord refuses:
- `GET /applications/{app}/skus`; `GET /applications/{app}/entitlements` with `user_id`, `sku_ids` (comma
  separated), `before` or `after` (not both), `limit` 1-100 (default 100), `guild_id`, `exclude_ended`,
  `exclude_deleted` (default true); each page in ascending id order (`before`: the newest ones below it);
- `GET /applications/{app}/entitlements/{id}`; `POST .../entitlements/{id}/consume` (204) only for an
  undeleted, unconsumed entitlement of a consumable SKU, else an error (the exact code Discord answers to a
  second consume is not documented, so the bot must not rely on it);
- test entitlements: `POST /applications/{app}/entitlements` (sku_id, owner_id, owner_type 2 = user) and
  `DELETE /applications/{app}/entitlements/{id}` (test ones only);
- a consumable cannot be bought again while the buyer holds an unconsumed one (`purchase` raises `Refused`);
- gateway events ENTITLEMENT_CREATE / UPDATE / DELETE with the entitlement object as their data, sent to every
  connected bot (none connected: the bot was down, and learns of it from the list);
- a premium button (style 6) carries a `sku_id` of this application and no custom_id, label, url or emoji.
"""

from dataclasses import dataclass
from typing import Any

SKU_DURABLE, SKU_CONSUMABLE, SKU_SUBSCRIPTION = 2, 3, 5
SKU_AVAILABLE = 1 << 2
ENTITLEMENT_PURCHASE, ENTITLEMENT_TEST_MODE_PURCHASE = 1, 4
PREMIUM_STYLE = 6
UNKNOWN_ENTITLEMENT = 10029  # Discord's JSON error code
UNKNOWN_SKU = 10013

STORE_ROUTES = [
    ("GET", r"/applications/(?P<app>\d+)/skus", "list_skus"),
    ("GET", r"/applications/(?P<app>\d+)/entitlements", "list_entitlements"),
    ("POST", r"/applications/(?P<app>\d+)/entitlements", "create_test_entitlement"),
    ("GET", r"/applications/(?P<app>\d+)/entitlements/(?P<entitlement>\d+)", "get_entitlement"),
    ("DELETE", r"/applications/(?P<app>\d+)/entitlements/(?P<entitlement>\d+)", "delete_test_entitlement"),
    ("POST", r"/applications/(?P<app>\d+)/entitlements/(?P<entitlement>\d+)/consume", "consume_entitlement"),
]
STORE_ROUTE_NAMES = {name for _, _, name in STORE_ROUTES}


@dataclass
class Entitlement:
    id: int
    sku_id: int
    user_id: int | None
    type: int
    guild_id: int | None = None
    deleted: bool = False
    consumed: bool = False

    def payload(self, application_id: int) -> dict[str, Any]:
        data = {
            "id": str(self.id),
            "sku_id": str(self.sku_id),
            "application_id": str(application_id),
            "user_id": str(self.user_id) if self.user_id is not None else None,
            "type": self.type,
            "deleted": self.deleted,
            "starts_at": None,
            "ends_at": None,
            "consumed": self.consumed,
            "gift_code_flags": 0,
            "promotion_id": None,
        }
        if self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        return data


class FakeStore:
    """Mixed into FakeDiscord, which provides APP_ID, _ids, _json, dispatch, _sockets and Refused."""

    def _store_init(self) -> None:
        self.skus: dict[int, dict] = {}
        self.entitlements: dict[int, Entitlement] = {}
        self.consume_calls = 0

    # --- what tests do -----------------------------------------------------------------------------------------

    def add_sku(self, name: str, *, type: int = SKU_CONSUMABLE) -> int:
        sku_id = next(self._ids)
        slug = "-".join(name.lower().split())
        self.skus[sku_id] = {
            "id": str(sku_id),
            "type": type,
            "application_id": str(self.APP_ID),
            "name": name,
            "slug": slug,
            "flags": SKU_AVAILABLE,
        }
        return sku_id

    async def purchase(self, user_id: int, sku_id: int, *, type: int = ENTITLEMENT_PURCHASE) -> Entitlement:
        """A member buys a SKU in Discord's checkout (a premium button or the store page)."""
        from tests.discordbot.fake_discord import Refused

        sku = self.skus.get(sku_id)
        if sku is None:
            raise Refused(404, UNKNOWN_SKU, "Unknown SKU")
        holding = [
            e for e in self.entitlements.values() if e.sku_id == sku_id and e.user_id == user_id and not e.deleted
        ]
        if sku["type"] == SKU_CONSUMABLE and any(not e.consumed for e in holding):
            raise Refused(400, 0, "You already own this item: it must be consumed before it can be bought again")
        if sku["type"] == SKU_DURABLE and holding:
            raise Refused(400, 0, "You already own this item")
        entitlement = Entitlement(id=next(self._ids), sku_id=sku_id, user_id=user_id, type=type)
        self.entitlements[entitlement.id] = entitlement
        await self.send_entitlement_event("ENTITLEMENT_CREATE", entitlement)
        return entitlement

    async def refund(self, entitlement_id: int) -> None:
        """Discord refunds a purchase: the entitlement is deleted and ENTITLEMENT_DELETE sent."""
        entitlement = self.entitlements[entitlement_id]
        entitlement.deleted = True
        await self.send_entitlement_event("ENTITLEMENT_DELETE", entitlement)

    async def send_entitlement_event(self, event: str, entitlement: Entitlement) -> bool:
        """Send an entitlement event to every connected bot; False when none is connected (it was down)."""
        assert event in ("ENTITLEMENT_CREATE", "ENTITLEMENT_UPDATE", "ENTITLEMENT_DELETE")
        if not self._sockets:
            return False
        await self.dispatch(event, entitlement.payload(self.APP_ID))
        return True

    def unconsumed(self, user_id: int | None = None) -> list[Entitlement]:
        return [
            e
            for e in self.entitlements.values()
            if not e.consumed and not e.deleted and (user_id is None or e.user_id == user_id)
        ]

    # --- REST ---------------------------------------------------------------------------------------------------

    def _store_answer(self, call, params: dict) -> Any:
        from aiohttp import web

        from tests.discordbot.fake_discord import Refused

        if int(params["app"]) != self.APP_ID:
            raise Refused(403, 50001, "Missing Access")
        if call.route == "list_skus":
            return self._json(list(self.skus.values()))
        if call.route == "list_entitlements":
            return self._json([e.payload(self.APP_ID) for e in self._list_entitlements(call.query)])
        if call.route == "create_test_entitlement":
            body = call.json or {}
            sku_id, owner_id, owner_type = body.get("sku_id"), body.get("owner_id"), body.get("owner_type")
            if not str(sku_id or "").isdigit() or not str(owner_id or "").isdigit() or owner_type not in (1, 2):
                raise Refused(400, 50035, "Invalid Form Body (sku_id, owner_id and owner_type 1 or 2 are required)")
            if int(sku_id) not in self.skus:
                raise Refused(404, UNKNOWN_SKU, "Unknown SKU")
            entitlement = Entitlement(
                id=next(self._ids),
                sku_id=int(sku_id),
                user_id=int(owner_id) if owner_type == 2 else None,
                guild_id=int(owner_id) if owner_type == 1 else None,
                type=ENTITLEMENT_TEST_MODE_PURCHASE,
            )
            self.entitlements[entitlement.id] = entitlement
            return self._json(entitlement.payload(self.APP_ID))
        entitlement = self.entitlements.get(int(params["entitlement"]))
        if entitlement is None:
            raise Refused(404, UNKNOWN_ENTITLEMENT, "Unknown Entitlement")
        if call.route == "get_entitlement":
            return self._json(entitlement.payload(self.APP_ID))
        if call.route == "delete_test_entitlement":
            if entitlement.type != ENTITLEMENT_TEST_MODE_PURCHASE or entitlement.deleted:
                raise Refused(404, UNKNOWN_ENTITLEMENT, "Unknown Entitlement")
            entitlement.deleted = True
            return web.Response(status=204)
        # consume
        self.consume_calls += 1
        if entitlement.deleted:
            raise Refused(404, UNKNOWN_ENTITLEMENT, "Unknown Entitlement")
        if self.skus[entitlement.sku_id]["type"] != SKU_CONSUMABLE:
            raise Refused(400, 50035, "Invalid Form Body (only a consumable SKU's entitlement can be consumed)")
        if entitlement.consumed:
            raise Refused(400, 0, "Entitlement already consumed")
        entitlement.consumed = True
        return web.Response(status=204)

    def _list_entitlements(self, query: dict[str, str]) -> list[Entitlement]:
        from tests.discordbot.fake_discord import Refused

        def snowflake(name: str) -> int | None:
            value = query.get(name)
            if value is None:
                return None
            if not value.isdigit():
                raise Refused(400, 50035, f"Invalid Form Body ({name}: value is not snowflake)")
            return int(value)

        def flag(name: str, default: bool) -> bool:
            value = query.get(name)
            if value is None:
                return default
            if value.lower() not in ("true", "false", "1", "0"):
                raise Refused(400, 50035, f"Invalid Form Body ({name}: must be a boolean)")
            return value.lower() in ("true", "1")

        limit_text = query.get("limit", "100")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
            raise Refused(400, 50035, "Invalid Form Body (limit: must be 1 to 100)")
        limit = int(limit_text)
        before, after = snowflake("before"), snowflake("after")
        if before is not None and after is not None:
            raise Refused(400, 50035, "Invalid Form Body (before and after cannot both be given)")
        user_id, guild_id = snowflake("user_id"), snowflake("guild_id")
        sku_ids = None
        if "sku_ids" in query:
            parts = query["sku_ids"].split(",")
            if not all(part.isdigit() for part in parts):
                raise Refused(400, 50035, "Invalid Form Body (sku_ids: value is not snowflake)")
            sku_ids = {int(part) for part in parts}
        flag("exclude_ended", False)  # checked only: no entitlement here ends (consumables and test ones never do)
        exclude_deleted = flag("exclude_deleted", True)
        found = sorted(
            (
                e
                for e in self.entitlements.values()
                if (user_id is None or e.user_id == user_id)
                and (guild_id is None or e.guild_id == guild_id)
                and (sku_ids is None or e.sku_id in sku_ids)
                and not (exclude_deleted and e.deleted)
                and (before is None or e.id < before)
                and (after is None or e.id > after)
            ),
            key=lambda e: e.id,
        )
        return found[-limit:] if before is not None else found[:limit]

    def _validate_premium_button(self, item: dict) -> None:
        """A premium button: style 6 with a SKU of this application, and nothing else that shows or answers."""
        from tests.discordbot.fake_discord import Refused

        sku_id, style = item.get("sku_id"), item.get("style")
        if sku_id is None and style != PREMIUM_STYLE:
            return
        if style != PREMIUM_STYLE or sku_id is None:
            raise Refused(400, 50035, "Invalid Form Body (a button with a sku_id must be style 6, and vice versa)")
        if any(item.get(key) is not None for key in ("custom_id", "label", "url", "emoji")):
            raise Refused(400, 50035, "Invalid Form Body (a premium button has no custom_id, label, url or emoji)")
        if not str(sku_id).isdigit() or int(sku_id) not in self.skus:
            raise Refused(400, 50035, "Invalid Form Body (sku_id: unknown SKU)")
