"""The rulebook language: YAML source with locations → schema → units and formulas → compiled plan."""
