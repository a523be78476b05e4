from stedi.redis_source.publisher import main

main()
