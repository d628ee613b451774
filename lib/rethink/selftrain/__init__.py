"""Self-training: teachers, pseudo-labels and noised students (Noisy Student, Zoph et al.)."""
from .losses import NoisyStudentLoss, StudentTargets, soft_cross_entropy
from .pseudo_labels import PseudoLabels, select_pseudo_labels, teacher_probabilities
from .loader import StudentLoader

__all__ = ["NoisyStudentLoss", "StudentTargets", "soft_cross_entropy", "PseudoLabels",
           "select_pseudo_labels", "teacher_probabilities", "StudentLoader"]
