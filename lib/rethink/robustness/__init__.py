"""Robustness benchmarks at CIFAR-10 scale: corruptions (-C), perturbation sequences (-P),
natural adversarial examples (-A) and gradient attacks (FGSM, PGD)."""
