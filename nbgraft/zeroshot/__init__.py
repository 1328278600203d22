"""Distillation with no real image: one-stage adversarial training (`onestage`, its checks in `checks`) with its
games, the DCGAN (`gan`) and data-free distillation (`dfad`), and images inverted from the teacher (`inversion`)."""
