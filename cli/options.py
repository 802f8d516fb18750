"""Options shared by several commands."""
from __future__ import annotations

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON lines).")
device_option = click.option("--device", default=None, help="cuda, cuda:N or cpu (default: CUDA when present).")
