"""The paper's experiments: ReLU against tanh (§3.1, Figure 1) and the ablations of §3-§4."""
