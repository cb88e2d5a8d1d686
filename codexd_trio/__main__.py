from codexd_trio.cli import main

raise SystemExit(main())
