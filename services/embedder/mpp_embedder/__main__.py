"""``python -m mpp_embedder``: run the embedder until SIGTERM."""

from mpp_embedder.service import main

raise SystemExit(main())
