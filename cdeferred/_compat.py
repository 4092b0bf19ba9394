"""Which implementation the package uses.

``CDEFERRED_NO_EXTENSIONS=1`` forces the pure-Python reference even where the
C extension is built; it is also used automatically when the extension cannot
be imported (PyPy, a source install without a compiler).
"""

import os

USE_EXTENSIONS = os.environ.get("CDEFERRED_NO_EXTENSIONS", "") in ("", "0")
