"""Transfer learning (Kornblith et al. 2019): targets, features, logistic regression, fine-tuning."""
