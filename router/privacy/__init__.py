"""Privacy: suppression, deletion regulations and their worker, ``router privacy``.

Data flows through two compacted topics (:mod:`router.privacy.records`): the suppression list,
which the processor, delivery agents and console follow (:mod:`router.privacy.state`), and the
regulations, which :mod:`router.privacy.submit` creates and the regulation worker
(:mod:`router.privacy.worker`, in the ops role) carries out at every destination.
"""
