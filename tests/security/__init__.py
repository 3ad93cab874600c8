"""The adversarial suite (issue 8): attacks, fuzzing, faults, leaks, static checks."""
