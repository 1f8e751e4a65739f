"""The processor's stages: plain functions over batches of decoded events, in travel order.

decode -> sources -> dedup -> middleware -> plans -> transforms (source) ->
for each destination: integrations -> filters -> transforms (destination) -> fanout.
"""
