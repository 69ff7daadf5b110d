"""Knowing when unsure: calibrated probabilities and an out-of-distribution score (issue 23).

`calibration`: one temperature fitted on the validation split (ranking unchanged), expected
calibration error, negative log-likelihood and the reliability diagram's data.
`ood`: a compact description of the training transfer values (a bounded sample for the k-th
nearest neighbour; class Gaussians for comparison), its score in TensorFlow ops for the serving
graph, and the threshold that keeps 95 % of validation images in-distribution.
Used by trainer.train (fit, measure) and trainer.serve (export); imports neither.
"""
