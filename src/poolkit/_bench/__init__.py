"""The machinery of ``poolkit bench`` (private; the command line is :mod:`poolkit.cli`).

Split by concern:

* ``_url``: parse, validate and redact the target URL.
* ``_server`` / ``_client``: the embedded HTTP/1.1 server and the stdlib keep-alive client
  connector, so the command needs no extra when run without a URL.
* ``_targets``: one adapter per backend (pool factory, one request, server limit).
* ``_measure``: connect cost, connect-per-request and pooled throughput, percentiles.
* ``_sizing``: Little's-law pool sizing and the server-limit check (pure functions).
* ``_progress`` / ``_report``: the progress bar, the text table and the JSON document.
* ``_command``: the run itself, error handling and exit codes (``_errors``).
"""
