"""The Python faces of rtcore's shared-memory objects and its realtime timer.

Each class wraps one C++ structure in ``rtcore._core`` that lives in one POSIX shared-memory segment
(see ``_shm.SharedObject``): the replay buffer (``replay``), the observation and action boards
(``boards``), the stagger schedule and learner turnstile (``sched``), the parameter store
(``params``), plain shared arrays (``shared_array``), and the absolute-deadline timer (``timer``).
Nothing here imports torch or knows about agents; the process roles in ``rtcore.agent`` build on it.
"""
