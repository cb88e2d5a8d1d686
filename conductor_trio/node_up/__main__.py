from conductor_trio.node_up.run import main

raise SystemExit(main())
