"""The helpers of examples/train_digits.py and examples/predict_digits.py, one job each, so that train_digits.py reads
as the chapter's training loop:

* ``data``: the two datasets (scikit-learn's 8x8 digits, offline; torchvision's MNIST) and each epoch's shuffle;
* ``outputs``: the network's cost and accuracy, the confusion matrix, the plot, the checkpoint;
* ``cli``: the flags, the processes of a ``--ddp`` run, and one-line errors (``errors``).
"""
