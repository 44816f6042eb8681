from flashtx.cli import main

raise SystemExit(main())
