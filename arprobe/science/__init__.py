"""The paper's pure computations (numpy in, numbers out) and the statistics that judge them."""
