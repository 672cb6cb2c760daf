"""Where the chat's lines come from and go to: a terminal screen, or plain lines through pipes.

On a terminal the person types on the bottom line while messages arrive. prompt_toolkit's
`patch_stdout` draws every printed line above that input line and then redraws the input with what
was typed so far, so an incoming message or receipt never lands in the middle of a half-typed line.
prompt_toolkit wants the main thread (Ctrl-C, window resizes), so there the conversation (which owns
the `VeilClient` and its socket, and is meant for one thread) runs in a worker thread and gets the
typed lines through a queue.

Through pipes (a script, a test) the conversation keeps the main thread, prints plain lines, and a
daemon thread reads standard input into the same kind of queue: a blocking `readline` cannot be
combined with waiting for frames otherwise, and leaving must not wait for a line that never comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Iterable
from typing import TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.patch_stdout import patch_stdout

QUIT = "/quit"
COMMANDS = ("/file ", "/members", "/verify", "/help", QUIT)
# How long leaving waits for the conversation to finish what it is doing (a send, a fetch).
_FINISH_SECONDS = 10.0


class TypedLines:
    """Lines the person entered, handed from the thread that reads them to the conversation."""

    def __init__(self) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()

    def put(self, line: str | None) -> None:
        """One entered line; None says there will be no more."""
        self._lines.put(line)

    def pending(self) -> list[str | None]:
        """Every line entered since the last call; None marks the end of input."""
        lines: list[str | None] = []
        while True:
            try:
                lines.append(self._lines.get_nowait())
            except queue.Empty:
                return lines


def piped_lines(source: TextIO) -> TypedLines:
    """The lines of `source`, read by a daemon thread (so leaving never waits for a keypress)."""
    lines = TypedLines()

    def read() -> None:
        for line in source:
            lines.put(line.rstrip("\r\n"))
        lines.put(None)

    threading.Thread(target=read, name="chat-input", daemon=True).start()
    return lines


class _ChatCompleter(Completer):
    """Tab completes the commands, and the path after `/file `."""

    def __init__(self) -> None:
        self._paths = PathCompleter(expanduser=True)

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        if text.startswith("/file "):
            yield from self._paths.get_completions(Document(text[len("/file ") :]), complete_event)
        elif text.startswith("/") and " " not in text:
            yield from (Completion(c, start_position=-len(text)) for c in COMMANDS if c.startswith(text))


def converse_on_terminal(converse: Callable[[TypedLines], None], *, hint: str) -> None:
    """Run `converse` in a worker thread while this thread keeps the input line at the bottom of
    the terminal (with `hint` under it), until either ends; the worker's failure is raised here."""
    with patch_stdout():
        asyncio.run(_input_beside(converse, hint))


async def _input_beside(converse: Callable[[TypedLines], None], hint: str) -> None:
    loop = asyncio.get_running_loop()
    lines = TypedLines()
    finished: asyncio.Future[None] = loop.create_future()

    def settle(failure: BaseException | None) -> None:
        if failure is None:
            finished.set_result(None)
        else:
            finished.set_exception(failure)

    def work() -> None:
        failure: BaseException | None = None
        try:
            converse(lines)
        except BaseException as error:  # handed to the main thread, which raises it
            failure = error
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for it any more
            loop.call_soon_threadsafe(settle, failure)

    # A daemon thread: if a send hangs on a dead network, leaving still ends the process.
    threading.Thread(target=work, name="chat-conversation", daemon=True).start()
    typing = asyncio.ensure_future(_read_typed(lines, hint))
    try:
        await asyncio.wait({finished, typing}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        lines.put(None)  # the person left (or was interrupted): the conversation stops at its next tick
        typing.cancel()  # the conversation ended by itself (a failure): the input line goes too
        with contextlib.suppress(asyncio.CancelledError):
            await typing
    # Raises what ended the conversation. Still busy after the wait (a send on a dead network), its
    # daemon thread ends with the process; shield keeps the future pending for a late result.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(finished), _FINISH_SECONDS)


async def _read_typed(lines: TypedLines, hint: str) -> None:
    # erase_when_done: the sent line comes back numbered, as the conversation prints it.
    session: PromptSession[str] = PromptSession(
        erase_when_done=True,
        bottom_toolbar=hint,
        completer=_ChatCompleter(),
        complete_while_typing=False,
        reserve_space_for_menu=0,
    )
    while True:
        try:
            line = await session.prompt_async("> ")
        except (EOFError, KeyboardInterrupt):  # Ctrl-D, Ctrl-C
            lines.put(None)
            return
        lines.put(line)
        if line.strip() == QUIT:
            return
