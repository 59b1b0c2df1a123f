"""Real-looking (package description, debtags tag) pairs shared by the judge backend tests."""

from eztag.prompts import Pair

DOCUMENTS = (
    "vlc: multimedia player and streamer for audio and video files, DVDs and network streams",
    "gnuchess: chess engine that plays against you on a text or graphical board",
    "postfix: high-performance mail transport agent that delivers and routes e-mail",
    "gcc: the GNU C compiler, turns C source code into programs for many architectures",
)
LABELS = (
    ("Audio", "Works with sound and music"),
    ("Video", "Works with video and films"),
    ("Board games (chess, go, ...)", "Games and amusement"),
    ("Mail transport agent", "Mail"),
    ("C compiler", "Software development"),
)
PAIRS = [Pair(document, label, description) for document in DOCUMENTS for label, description in LABELS]
