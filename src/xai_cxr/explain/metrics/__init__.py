"""Checks of explanations: localization against masks, faithfulness, randomization sanity checks, the audit tables
and the planted-shortcut audit."""
