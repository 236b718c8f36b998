"""Policy adapters (installed as ``vla_gym.policies``): one folder or module per family, a shared toolkit,
and the tiny checkpoint writers. A family is built from its ``conf/policy/<name>.yaml`` ``_target_``."""
