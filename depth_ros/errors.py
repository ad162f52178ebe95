"""The one error for a configuration that cannot be used: node parameters (:mod:`depth_ros.ros.params`) and
training configurations (:mod:`depth_ros.learning.config`) raise it, and every command-line tool prints it as one
line (a ValueError, :func:`depth_ros.tools.cli.run_cli`)."""


class ConfigError(ValueError):
    """A parameter or configuration value that cannot be used; the message names the key and the rule."""
