"""medner: clinical named-entity recognition for EHR warehouses.

The importable library behind the jobs: corpus reading, tokenisation, the taggers' shared contract,
the pandas UDF and table I/O. Importing it needs no Spark session, no GPU and no model file.
"""

__version__ = "0.1.0"
