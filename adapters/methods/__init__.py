"""Every compatibility method, one module each; importing this package registers them all.

Closed form: procrustes (centred orthogonal map), affine (ridge), adjoint (ridge both ways,
blended), hedge (the adjoint's and Procrustes' queries blended at a fixed share: what auto serves
where it would choose a closed form). Trained on frozen features: lambda_orth, oca, bt2, drift_lowrank, drift_mlp,
rank_distill. With a memory of the pairs: neighbour_memory (the adjoint plus the old vectors of
the query's nearest pairs). Needs the query in both models: slerp. Selection: auto (fits the
candidates out-of-fold and keeps the best). A new method is a new module here that decorates its
class with `@register_method` and is imported below.
"""
# The import order below is the registration order, which is auto's candidate order: keep it
# (pyproject exempts this file from import sorting).

from adapters.methods import procrustes
from adapters.methods import affine
from adapters.methods import adjoint
from adapters.methods import hedge
from adapters.methods import lambda_orth
from adapters.methods import oca
from adapters.methods import bt2
from adapters.methods import drift_lowrank
from adapters.methods import drift_mlp
from adapters.methods import rank_distill
from adapters.methods import neighbour_memory
from adapters.methods import slerp
from adapters.methods import auto
