"""The toy-world studies: measurements of the paper's claims on the toy world (toyworld/) rather
than of the product's speed. :mod:`studies.toyworld_ablations` runs the ablation table (CAM vs the
Conc-Cond baseline, randomized blending vs independent chunks, the shipped model) through the
nightly-benchmark flow; :mod:`studies.conditioning_probe` measures how an extension model carries
its conditioning frames across a chunk join; :mod:`studies.chunk_joins` prints each video's cut
frames and join-change ratio. They sit above every other package and may use any of them.
"""
