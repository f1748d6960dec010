"""What the ticket page shows of each message: quoted lines hidden, remote images blocked,
delivery state, and which attachments may be shown in place."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from mailgateway.quoting import hidden_line_count
from mailgateway.sanitize import block_remote_images
from models import queries
from models.schema import Attachment, Direction, Message, Outbox

# Raster images only: an SVG is a document that can carry script, so it is only downloaded.
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})

THREADED_BY = {
    "in-reply-to": "its In-Reply-To header names a message of this ticket",
    "references": "its References header names a message of this ticket",
    "referenced-by": "a reply already on this ticket names it as its parent",
    "thread-root": "mail already on this ticket is of the same conversation (their References "
                   "start at the same first message)",
    "reply-token": "it was sent to this ticket's signed reply address",
    "subject-tag": "its subject carries this ticket's tag, from a participant",
    "new": "it started a new conversation",
    "split": "an agent split it off into this ticket",
}


@dataclass(frozen=True)
class MessageView:
    message: Message
    hidden_lines: int  # quoted history lines the reply view leaves out
    remote_images: int  # remote images kept from loading until the agent asks
    delivery: Outbox | None
    images: list[Attachment]  # shown in place
    files: list[Attachment]  # offered for download

    @property
    def kind(self) -> str:
        return self.message.direction

    @property
    def threaded_reason(self) -> str:
        return THREADED_BY.get(self.message.threaded_by, self.message.threaded_by)


def is_inline_image(attachment: Attachment) -> bool:
    return attachment.content_type.lower() in INLINE_IMAGE_TYPES


def conversation(session: Session, ticket_id: int) -> list[MessageView]:
    messages = queries.ticket_messages(session, ticket_id)
    outbound = [m.id for m in messages if m.direction == Direction.OUTBOUND]
    delivery = queries.deliveries(session, outbound)
    return [
        MessageView(
            message=m,
            hidden_lines=hidden_line_count(m.text, m.reply_text) if m.reply_text else 0,
            remote_images=block_remote_images(m.html)[1] if m.html else 0,
            delivery=delivery.get(m.id),
            images=[a for a in m.attachments if is_inline_image(a)],
            files=[a for a in m.attachments if not is_inline_image(a)],
        )
        for m in messages
    ]
