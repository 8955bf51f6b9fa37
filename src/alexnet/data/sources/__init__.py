"""Where images come from (§2): one module per format (image folders, ILSVRC-2012, CIFAR-10,
scikit-learn's digits, IDX files, images handed over in Python), the rules for decoding an odd
image, §2's down-sampling, and what a data set is (`ImageSource`, `Splits`)."""
