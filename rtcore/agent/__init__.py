"""The agent's process roles and their bookkeeping.

``inference`` (the staggered TorchScript workers), ``learner`` (round-robin DQN learners and the
sequential baseline), ``runner`` (spawns and watches them all), with the run's ``config``,
``metrics`` and ``report``. Plumbing that every child process shares lives in ``_proc``.
"""
