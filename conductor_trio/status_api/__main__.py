from conductor_trio.status_api.service import main

raise SystemExit(main())
