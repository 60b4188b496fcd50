"""``distnn.estimator_worker`` with rank 1 raising in its second optimizer step: what a
crash in ``MLPClassifier(procs=2).fit`` looks like (the test puts this module in the
worker's place through a ``DISTNN_MPIEXEC`` wrapper)."""

import sys

from injection import fail_in_update

from distnn import estimator_worker

fail_in_update(rank=1, call=2, message="injected failure in the estimator's job")
sys.exit(estimator_worker.main(sys.argv[1:]))
