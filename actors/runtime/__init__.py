"""The actor runtime on anyio: bounded mailboxes, feeds, asks, supervision.

``actor.py`` holds ``Actor`` (mailbox + feed + ``handle``), ``Ask`` (a message with a reply
future), ``MailboxFull`` and ``ActorStopped``; ``supervisor.py`` the ``Supervisor`` that owns the
loops. Domain logic never lives here: actors wrap pure state objects from ``actors.state``.
"""

from actors.runtime.actor import Actor, ActorStopped, Ask, MailboxFull, Wake
from actors.runtime.supervisor import Supervisor

__all__ = ["Actor", "ActorStopped", "Ask", "MailboxFull", "Supervisor", "Wake"]
