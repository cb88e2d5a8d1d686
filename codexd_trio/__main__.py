from codexd_trio.cli.main import main

raise SystemExit(main())
