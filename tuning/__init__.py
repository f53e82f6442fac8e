"""KerasTuner on top of kbn: the report's coarse-to-fine search of eta and lambda.

Its modules (hypermodel, oracle, search) come with the tuning issue; the
package exists now so the distribution's layout is the final one.
"""
