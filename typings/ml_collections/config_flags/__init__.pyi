from typing import Any

def DEFINE_config_file(  # noqa: N802 (its name)
    name: str,
    default: str | None = None,
    help_string: str = ...,
    flag_values: Any = ...,
    lock_config: bool = True,
    accept_new_attributes: bool = False,
    sys_argv: list[str] | None = None,
    **kwargs: Any,
) -> Any: ...
