"""Training: one engine (:mod:`.engine`), two objectives (:mod:`.objectives`: SiLog on labels, photometric view
synthesis on posed images), one configuration schema (:mod:`.config`) and the parameter groups (:mod:`.trainable`)
shared with the online adaptation (:mod:`.adaptation`, the learner behind adaptation_node)."""
