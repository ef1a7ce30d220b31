"""The cascade router (`cascadia-plan route`): needs the `router` extra."""
